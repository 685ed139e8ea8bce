//! The agent's CDI spec file, `<spec-dir>/kubesched-agent.json`: one device per MIG instance
//! the agent created on demand (named by its MIG UUID), which the NVIDIA toolkit's spec, made
//! before the instance existed, cannot name. The spec-level edits (driver libraries, hooks)
//! are copied from a toolkit spec of the same kind, so an injected instance gets what the
//! toolkit's own devices get. Rewritten atomically (temp file and rename); removed when empty
//! (a CDI spec needs a device). Toolkit specs are read as JSON only: YAML is recognised but
//! not parsed, as no YAML parser is a dependency of the agent.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CdiConfig;
use super::nodes::{HostDevices, MigNodeIds};

/// File name of the agent's spec in the spec folder.
pub const SPEC_FILE_NAME: &str = "kubesched-agent.json";
/// The CDI version written, unless the copied toolkit edits need a newer one.
const CDI_VERSION: &str = "0.6.0";
/// The folders container runtimes read CDI specs from by default, lowest priority first.
const STANDARD_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// Why the agent's CDI spec could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum CdiSpecError {
    /// The driver's MIG capability table could not be read.
    #[error("cannot read the MIG capability table {path}: {source}")]
    MigMinors {
        /// The table's path.
        path: String,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// The capability table has no line for the instance: no device node grants access to it.
    #[error("the MIG capability table {path} has no line {key}")]
    MigMinorMissing {
        /// The table's path.
        path: String,
        /// The missing key, e.g. `gpu0/gi3/ci0/access`.
        key: String,
    },
    /// The spec file (or its folder) could not be written, replaced or removed.
    #[error("cannot write the CDI spec {path}: {source}")]
    Write {
        /// The file or folder.
        path: String,
        /// The file system error.
        #[source]
        source: std::io::Error,
    },
    /// The spec could not be encoded as JSON.
    #[error("cannot encode the CDI spec {path}: {source}")]
    Encode {
        /// The spec file.
        path: String,
        /// The encoding error.
        #[source]
        source: serde_json::Error,
    },
}

/// One device node of a CDI device; the runtime reads its type and numbers on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Path of the node, on the host and in the container, e.g. `/dev/nvidia0`.
    pub path: String,
}

impl DeviceNode {
    /// A node at `path`.
    pub fn new(path: impl Into<String>) -> Self {
        DeviceNode { path: path.into() }
    }
}

/// What injecting one of the agent's CDI devices changes in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    /// Environment variables, as `NAME=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Device nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
}

/// The agent's spec file as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    cdi_version: String,
    kind: String,
    devices: Vec<SpecDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container_edits: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecDevice {
    name: String,
    container_edits: ContainerEdits,
}

/// The parts of another spec the agent reads; everything else is left alone.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtherSpec {
    #[serde(default)]
    cdi_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    devices: Vec<OtherDevice>,
    #[serde(default)]
    container_edits: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OtherDevice {
    #[serde(default)]
    name: String,
}

/// What the other specs of the agent's kind offer.
#[derive(Debug, Default)]
struct Toolkit {
    /// `cdiVersion` and spec-level edits of the highest-priority spec that has some.
    base: Option<(String, Value)>,
    /// Device names the specs define.
    names: BTreeSet<String>,
}

impl Toolkit {
    /// Whether another spec already defines `name`: a second definition would make the name
    /// ambiguous to the runtime.
    fn defines(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Device node paths the spec-level edits already inject.
    fn base_nodes(&self) -> BTreeSet<String> {
        let nodes = self
            .base
            .as_ref()
            .and_then(|(_, edits)| edits.get("deviceNodes"))
            .and_then(Value::as_array);
        nodes
            .into_iter()
            .flatten()
            .filter_map(|n| n.get("path").and_then(Value::as_str).map(String::from))
            .collect()
    }
}

/// `major.minor.patch` for comparing CDI versions; `None` when it does not parse.
fn version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// The agent's devices by name, with their edits.
type Entries = BTreeMap<String, ContainerEdits>;

/// The agent's CDI spec file of dynamic MIG instances. All changes are serialised; each one
/// rewrites the file, so the runtime always reads a whole spec.
#[derive(Debug)]
pub struct CdiSpecs {
    kind: String,
    spec_dir: PathBuf,
    search_dirs: Vec<PathBuf>,
    host: HostDevices,
    /// The file's devices by name; `None` until read from the file (entries survive restarts).
    entries: Mutex<Option<Entries>>,
}

impl CdiSpecs {
    /// The spec of `config`'s kind in `config.spec_dir`. Toolkit specs are looked for in the
    /// runtime's standard folders and the spec folder; device nodes on this host's defaults.
    pub fn new(config: &CdiConfig) -> Self {
        let mut search_dirs: Vec<PathBuf> = STANDARD_SPEC_DIRS.iter().map(PathBuf::from).collect();
        if !search_dirs.contains(&config.spec_dir) {
            search_dirs.push(config.spec_dir.clone());
        }
        CdiSpecs {
            kind: config.kind.clone(),
            spec_dir: config.spec_dir.clone(),
            search_dirs,
            host: HostDevices::default(),
            entries: Mutex::new(None),
        }
    }

    /// Looks for toolkit specs in `dirs` only, lowest priority first.
    pub fn with_search_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.search_dirs = dirs;
        self
    }

    /// Reads MIG capability minors and device nodes through `host`.
    pub fn with_host_devices(mut self, host: HostDevices) -> Self {
        self.host = host;
        self
    }

    /// The CDI kind of the devices, e.g. `nvidia.com/gpu`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The spec file's path.
    pub fn path(&self) -> PathBuf {
        self.spec_dir.join(SPEC_FILE_NAME)
    }

    /// The names of the devices in the spec.
    pub fn names(&self) -> Vec<String> {
        let mut guard = self.entries();
        self.loaded(&mut guard).keys().cloned().collect()
    }

    /// Adds (or replaces) device `name` with `edits` and rewrites the file. Returns `false`
    /// (and keeps no entry) when another spec of the kind already defines the name.
    pub fn add(&self, name: &str, edits: ContainerEdits) -> Result<bool, CdiSpecError> {
        let toolkit = self.toolkit();
        self.put(name, edits, &toolkit)
    }

    /// Adds the MIG instance `uuid` with the device nodes of `ids` (those the toolkit's
    /// spec-level edits already inject left out). Err when its nodes cannot be found or the
    /// file cannot be written: the runtime could then not inject the instance.
    pub fn add_mig(&self, uuid: &str, ids: MigNodeIds) -> Result<bool, CdiSpecError> {
        let toolkit = self.toolkit();
        let shared = toolkit.base_nodes();
        let nodes = self.host.mig_device_nodes(ids)?;
        let edits = ContainerEdits {
            env: Vec::new(),
            device_nodes: nodes
                .into_iter()
                .filter(|n| !shared.contains(&n.path))
                .collect(),
        };
        if toolkit.base.is_none() {
            tracing::warn!(
                kind = %self.kind,
                mig = uuid,
                dirs = ?self.search_dirs,
                "no CDI spec of this kind with container edits: the MIG instance gets its device nodes only, without the driver's libraries"
            );
        }
        self.put(uuid, edits, &toolkit)
    }

    /// Removes device `name` and rewrites the file; `Ok(false)` when it was not there.
    pub fn remove(&self, name: &str) -> Result<bool, CdiSpecError> {
        let removed = self.retain(|n| n != name)?;
        Ok(!removed.is_empty())
    }

    /// Removes the devices `keep` refuses and rewrites the file when any went; returns their
    /// names.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, CdiSpecError> {
        let mut guard = self.entries();
        let entries = self.loaded(&mut guard);
        let gone: Vec<String> = entries
            .keys()
            .filter(|n| !keep(n.as_str()))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        let mut next = entries.clone();
        next.retain(|n, _| !gone.contains(n));
        self.write(&next, &self.toolkit())?;
        *entries = next;
        Ok(gone)
    }

    fn put(
        &self,
        name: &str,
        edits: ContainerEdits,
        toolkit: &Toolkit,
    ) -> Result<bool, CdiSpecError> {
        let mut guard = self.entries();
        let entries = self.loaded(&mut guard);
        let mut next = entries.clone();
        let ours = !toolkit.defines(name);
        if ours {
            next.insert(name.to_string(), edits);
        } else {
            tracing::debug!(
                device = name,
                "another CDI spec already defines the device; not adding it"
            );
            if next.remove(name).is_none() {
                return Ok(false);
            }
        }
        self.write(&next, toolkit)?;
        *entries = next;
        Ok(ours)
    }

    fn entries(&self) -> MutexGuard<'_, Option<Entries>> {
        // The map is replaced only after a completed write; a panic cannot leave half of one.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entries, read from the file the first time.
    fn loaded<'a>(&self, guard: &'a mut Option<Entries>) -> &'a mut Entries {
        guard.get_or_insert_with(|| self.read_own())
    }

    /// The devices of the file a previous run left; none when there is none or it is not ours.
    fn read_own(&self) -> Entries {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read the agent's CDI spec; starting a new one");
                return BTreeMap::new();
            }
        };
        match serde_json::from_str::<SpecFile>(&text) {
            Ok(spec) if spec.kind == self.kind => spec
                .devices
                .into_iter()
                .map(|d| (d.name, d.container_edits))
                .collect(),
            Ok(spec) => {
                tracing::warn!(path = %path.display(), found = %spec.kind, kind = %self.kind, "the agent's CDI spec is of another kind; starting a new one");
                BTreeMap::new()
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "malformed agent CDI spec; starting a new one");
                BTreeMap::new()
            }
        }
    }

    /// The other specs of the agent's kind in the search folders (the agent's own file, by
    /// name, in none of them).
    fn toolkit(&self) -> Toolkit {
        let mut toolkit = Toolkit::default();
        for dir in &self.search_dirs {
            let Ok(listing) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = listing
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| n != SPEC_FILE_NAME)
                        && p.extension()
                            .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
                })
                .collect();
            files.sort();
            for file in files {
                self.read_other(&file, &mut toolkit);
            }
        }
        toolkit
    }

    fn read_other(&self, file: &Path, toolkit: &mut Toolkit) {
        let Ok(text) = std::fs::read_to_string(file) else {
            return;
        };
        // The toolkit writes YAML by default; JSON is YAML too, but its own parser is exact.
        let parsed = if file.extension().is_some_and(|e| e == "json") {
            serde_json::from_str::<OtherSpec>(&text).map_err(|e| e.to_string())
        } else {
            serde_yaml::from_str::<OtherSpec>(&text).map_err(|e| e.to_string())
        };
        let spec: OtherSpec = match parsed {
            Ok(spec) => spec,
            Err(error) => {
                tracing::debug!(file = %file.display(), %error, "skipping an unreadable CDI spec");
                return;
            }
        };
        if spec.kind != self.kind {
            return;
        }
        toolkit
            .names
            .extend(spec.devices.into_iter().map(|d| d.name));
        let edits = spec
            .container_edits
            .filter(|e| e.as_object().is_some_and(|o| !o.is_empty()));
        if let Some(edits) = edits {
            // Later folders and files win, as they do for the runtime.
            toolkit.base = Some((spec.cdi_version, edits));
        }
    }

    /// Writes `entries` with the toolkit's spec-level edits (temp file, then rename), or
    /// removes the file when there are none.
    fn write(&self, entries: &Entries, toolkit: &Toolkit) -> Result<(), CdiSpecError> {
        let path = self.path();
        let failed = |source| CdiSpecError::Write {
            path: path.display().to_string(),
            source,
        };
        if entries.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(failed(error)),
                _ => Ok(()),
            };
        }
        let mut cdi_version = CDI_VERSION.to_string();
        if let Some((base_version, _)) = &toolkit.base
            && version(base_version).is_some_and(|v| Some(v) > version(CDI_VERSION))
        {
            // The copied edits may use fields of the newer version.
            cdi_version.clone_from(base_version);
        }
        let spec = SpecFile {
            cdi_version,
            kind: self.kind.clone(),
            devices: entries
                .iter()
                .map(|(name, edits)| SpecDevice {
                    name: name.clone(),
                    container_edits: edits.clone(),
                })
                .collect(),
            container_edits: toolkit.base.as_ref().map(|(_, edits)| edits.clone()),
        };
        let mut text =
            serde_json::to_string_pretty(&spec).map_err(|source| CdiSpecError::Encode {
                path: path.display().to_string(),
                source,
            })?;
        text.push('\n');
        std::fs::create_dir_all(&self.spec_dir).map_err(|source| CdiSpecError::Write {
            path: self.spec_dir.display().to_string(),
            source,
        })?;
        // Runtimes read only `.json` and `.yaml` files: the temp file is never taken for a spec.
        let temp = self.spec_dir.join(format!(".{SPEC_FILE_NAME}.tmp"));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())?;
                // The mode above is cut by the umask; the runtime needs to read the file.
                file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temp, &path));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(failed(error));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ksdp-cdi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn specs(dir: &Path) -> CdiSpecs {
        let config = CdiConfig {
            spec_dir: dir.join("cdi"),
            ..CdiConfig::default()
        };
        CdiSpecs::new(&config).with_search_dirs(vec![dir.join("cdi")])
    }

    fn edits(path: &str) -> ContainerEdits {
        ContainerEdits {
            env: Vec::new(),
            device_nodes: vec![DeviceNode::new(path)],
        }
    }

    fn read(path: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn add_and_remove_are_idempotent_and_the_empty_spec_goes() {
        let dir = temp("idem");
        let specs = specs(&dir);
        assert!(specs.add("MIG-a", edits("/dev/nvidia0")).unwrap());
        assert!(specs.add("MIG-a", edits("/dev/nvidia0")).unwrap());
        assert!(specs.add("MIG-b", edits("/dev/nvidia1")).unwrap());
        let file = read(&specs.path());
        assert_eq!(file["kind"], "nvidia.com/gpu");
        assert_eq!(file["cdiVersion"], "0.6.0");
        assert_eq!(file["devices"].as_array().unwrap().len(), 2);
        assert!(file.get("containerEdits").is_none());
        let mode = std::fs::metadata(specs.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(specs.remove("MIG-a").unwrap());
        assert!(!specs.remove("MIG-a").unwrap());
        assert_eq!(specs.names(), ["MIG-b"]);
        // A restarted agent finds the entries the previous one wrote.
        let again = self::specs(&dir);
        assert_eq!(again.names(), ["MIG-b"]);
        assert_eq!(again.retain(|_| false).unwrap(), ["MIG-b"]);
        assert!(!again.path().exists());
        assert!(
            !dir.join("cdi")
                .join(format!(".{SPEC_FILE_NAME}.tmp"))
                .exists()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn toolkit_edits_are_copied_and_its_names_are_not_redefined() {
        let dir = temp("toolkit");
        std::fs::create_dir_all(dir.join("cdi")).unwrap();
        let toolkit = r#"{"cdiVersion":"0.7.0","kind":"nvidia.com/gpu",
            "devices":[{"name":"MIG-static","containerEdits":{"deviceNodes":[{"path":"/dev/nvidia0"}]}}],
            "containerEdits":{"env":["NVIDIA_VISIBLE_DEVICES=void"],"deviceNodes":[{"path":"/dev/nvidiactl"}]}}"#;
        std::fs::write(dir.join("cdi/nvidia.json"), toolkit).unwrap();
        let other = r#"{"cdiVersion":"0.5.0","kind":"example.com/net","devices":[],
            "containerEdits":{"env":["OTHER=1"]}}"#;
        std::fs::write(dir.join("cdi/other.json"), other).unwrap();
        std::fs::write(
            dir.join("cdi/legacy.yaml"),
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: MIG-yaml\n  containerEdits: {}\n",
        )
        .unwrap();
        let specs = specs(&dir);
        assert!(!specs.add("MIG-static", edits("/dev/nvidia0")).unwrap());
        assert!(!specs.add("MIG-yaml", edits("/dev/nvidia0")).unwrap());
        assert!(!specs.path().exists());
        assert!(specs.add("MIG-new", edits("/dev/nvidia0")).unwrap());
        let file = read(&specs.path());
        assert_eq!(file["cdiVersion"], "0.7.0");
        assert_eq!(
            file["containerEdits"]["env"][0],
            "NVIDIA_VISIBLE_DEVICES=void"
        );
        assert_eq!(file["devices"][0]["name"], "MIG-new");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn versions_parse() {
        assert!(version("0.10.0") > version("0.6.0"));
        assert_eq!(version("0.6"), Some((0, 6, 0)));
        assert_eq!(version("x"), None);
    }
}
