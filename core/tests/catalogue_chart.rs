//! The Helm chart's `scheduler.managedResources`, and every rendered manifest that carries the
//! list, name the resource of every MIG profile of every catalogue model (and whole GPUs): a
//! pod asking for a resource missing there never reaches the extender. The YAML is read by
//! scanning lines, since core has no YAML parser and these lists are plain.
// A test states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kubesched_core::catalogue;
use kubesched_core::request::ResourceNames;

fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn chart_values() -> String {
    let path = repo_root().join("deploy/chart/kubesched/values.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The value of a top-level `key: value` line.
fn top_level(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map(|value| value.trim().trim_matches('"').to_string())
        .next()
}

/// The items of the block list under the first `managedResources:` key: `- item` (values) or
/// `- name: item` (rendered) lines until the indentation falls back to the key's. Comments and
/// other keys of an item are skipped. `None` when there is no such key.
fn managed_resources(text: &str) -> Option<Vec<String>> {
    let mut lines = text.lines();
    let key_indent = loop {
        let line = lines.next()?;
        if line.trim() == "managedResources:" {
            break indent(line);
        }
    };
    let mut items = Vec::new();
    for line in lines {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let item = trimmed.strip_prefix("- ");
        if indent(line) < key_indent || (indent(line) == key_indent && item.is_none()) {
            break;
        }
        let Some(item) = item else { continue };
        let item = item.split(" #").next().unwrap_or(item).trim();
        let item = item.strip_prefix("name:").map_or(item, str::trim);
        items.push(item.trim_matches(|c| c == '"' || c == '\'').to_string());
    }
    Some(items)
}

/// Resource name -> where it comes from (`B200-180GB 1g.23gb+me.all`), for every MIG profile
/// of every catalogue model and for whole GPUs.
fn catalogue_resources(names: &ResourceNames) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    all.insert(names.whole_gpu(), "whole GPUs".to_string());
    for model in catalogue::models() {
        for profile in model.mig.iter().flat_map(|g| &g.profiles) {
            all.entry(names.mig(&profile.name))
                .or_insert_with(|| format!("{} {}", model.name, profile.name));
        }
    }
    all
}

/// The catalogue resources `listed` lacks, each with the model and profile it stands for.
fn missing(want: &BTreeMap<String, String>, listed: &BTreeSet<String>) -> Vec<String> {
    want.iter()
        .filter(|(resource, _)| !listed.contains(*resource))
        .map(|(resource, from)| format!("{resource} ({from})"))
        .collect()
}

fn domain() -> String {
    top_level(&chart_values(), "resourceDomain").expect("values.yaml sets resourceDomain")
}

#[test]
fn the_chart_manages_every_catalogue_profile() {
    let values = chart_values();
    let domain = domain();
    let items = managed_resources(&values).expect("values.yaml has scheduler.managedResources");
    let listed: BTreeSet<String> = items.iter().map(|i| format!("{domain}/{i}")).collect();
    assert_eq!(
        listed.len(),
        items.len(),
        "managedResources lists a name twice"
    );
    let lacking = missing(&catalogue_resources(&ResourceNames::new(&domain)), &listed);
    assert!(
        lacking.is_empty(),
        "values.yaml scheduler.managedResources lacks: {}",
        lacking.join(", ")
    );
}

#[test]
fn the_rendered_manifests_manage_every_catalogue_profile() {
    // The manifests are rendered with the chart's default values, so its domain.
    let want = catalogue_resources(&ResourceNames::new(domain()));
    let dir = repo_root().join("deploy/manifests");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let Some(items) = managed_resources(&text) else {
            continue;
        };
        let listed: BTreeSet<String> = items.into_iter().collect();
        let lacking = missing(&want, &listed);
        assert!(
            lacking.is_empty(),
            "{}: managedResources lacks: {}",
            path.display(),
            lacking.join(", ")
        );
        checked.push(path);
    }
    assert!(
        !checked.is_empty(),
        "no manifest in {} carries managedResources",
        dir.display()
    );
}

#[test]
fn the_scanner_reads_both_list_forms() {
    let values =
        "a:\n  managedResources:\n    # group\n    - gpu\n    - mig-1g.10gb.me  # x\n  next: 1\n";
    assert_eq!(
        managed_resources(values).unwrap(),
        vec!["gpu".to_string(), "mig-1g.10gb.me".to_string()]
    );
    let rendered = [
        "        managedResources:",
        "          - name: nvidia.com/gpu",
        "            ignoredByScheduler: false",
        "          - name: nvidia.com/mig-7g.80gb",
        "            ignoredByScheduler: false",
        "  extender.yaml: |",
        "    - name: not/this",
    ]
    .join("\n");
    assert_eq!(
        managed_resources(&rendered).unwrap(),
        vec![
            "nvidia.com/gpu".to_string(),
            "nvidia.com/mig-7g.80gb".to_string()
        ]
    );
    assert_eq!(managed_resources("kind: ConfigMap\n"), None);
}
