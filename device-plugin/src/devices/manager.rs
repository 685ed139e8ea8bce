//! The resource manager: the devices of every advertised resource with their current health,
//! kept apart from the gRPC servers that serve them. Discovery replaces the device lists,
//! health faults overlay them, and every change is pushed to the resource's watchers (the
//! ListAndWatch streams).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::{AdvertisedDevice, ResourcePlan};

/// The effective device list of one resource.
pub type DeviceList = Arc<[AdvertisedDevice]>;

/// A new discovery advertises a different set of resource names: the servers must be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("advertised resources changed from {old:?} to {new:?}")]
pub struct ResourceSetChanged {
    /// Resource names advertised now.
    pub old: Vec<String>,
    /// Resource names the new discovery would advertise.
    pub new: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    plan: ResourcePlan,
    /// Devices a health check marked unhealthy, with the reason.
    faults: BTreeMap<String, String>,
}

/// The devices of every advertised resource with their effective health (discovered health
/// with XID faults overlaid), watched by each resource's ListAndWatch stream.
#[derive(Debug)]
pub struct ResourceManager {
    channels: BTreeMap<String, watch::Sender<DeviceList>>,
    state: Mutex<State>,
}

impl ResourceManager {
    /// A manager advertising `plan`'s resources, with no faults; the set of resource names is
    /// fixed for its lifetime.
    pub fn new(plan: ResourcePlan) -> Self {
        let state = State {
            plan,
            faults: BTreeMap::new(),
        };
        let channels = state
            .plan
            .keys()
            .map(|name| (name.clone(), watch::Sender::new(effective(&state, name))))
            .collect();
        ResourceManager {
            channels,
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave State half-updated (updates are single assignments).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The advertised resource names (e.g. `nvidia.com/gpu`, `nvidia.com/mig-1g.10gb`), sorted:
    /// one device plugin server each.
    pub fn resource_names(&self) -> Vec<String> {
        self.channels.keys().cloned().collect()
    }

    /// Watches one resource's device list (current value first).
    pub fn subscribe(&self, resource: &str) -> Option<watch::Receiver<DeviceList>> {
        self.channels.get(resource).map(watch::Sender::subscribe)
    }

    /// The current device list of `resource`, with effective health; `None` for a resource not
    /// advertised.
    pub fn snapshot(&self, resource: &str) -> Option<DeviceList> {
        self.channels.get(resource).map(|tx| tx.borrow().clone())
    }

    /// A device by id, with its effective health.
    pub fn lookup(&self, id: &str) -> Option<AdvertisedDevice> {
        self.channels
            .values()
            .find_map(|tx| tx.borrow().iter().find(|d| d.id == id).cloned())
    }

    /// Every advertised device, with its effective health.
    pub fn all_devices(&self) -> Vec<AdvertisedDevice> {
        self.channels
            .values()
            .flat_map(|tx| tx.borrow().iter().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Replaces the discovered devices; refuses when the resource names differ.
    pub fn update_plan(&self, plan: ResourcePlan) -> Result<(), ResourceSetChanged> {
        let mut state = self.state();
        if !plan.keys().eq(state.plan.keys()) {
            return Err(ResourceSetChanged {
                old: state.plan.keys().cloned().collect(),
                new: plan.keys().cloned().collect(),
            });
        }
        state.plan = plan;
        let names: Vec<String> = self.channels.keys().cloned().collect();
        self.publish(&state, &names);
        Ok(())
    }

    /// Marks devices unhealthy (`Some(reason)`) or clears their fault (`None`).
    /// Returns the ids whose fault state changed.
    pub fn set_fault(&self, ids: &[String], reason: Option<&str>) -> Vec<String> {
        let mut state = self.state();
        let mut changed = Vec::new();
        for id in ids {
            let did = match reason {
                Some(reason) => state
                    .faults
                    .insert(id.clone(), reason.to_string())
                    .is_none(),
                None => state.faults.remove(id).is_some(),
            };
            if did {
                changed.push(id.clone());
            }
        }
        let touched: BTreeSet<String> = state
            .plan
            .iter()
            .filter(|(_, devs)| devs.iter().any(|d| changed.contains(&d.id)))
            .map(|(r, _)| r.clone())
            .collect();
        self.publish(&state, &touched.into_iter().collect::<Vec<_>>());
        changed
    }

    /// Devices currently marked unhealthy by a health check, with the reason.
    pub fn faults(&self) -> BTreeMap<String, String> {
        self.state().faults.clone()
    }

    fn publish(&self, state: &State, resources: &[String]) {
        for name in resources {
            if let Some(tx) = self.channels.get(name) {
                let next = effective(state, name);
                tx.send_if_modified(|current| {
                    if **current == *next {
                        return false;
                    }
                    *current = next;
                    true
                });
            }
        }
    }
}

fn effective(state: &State, resource: &str) -> DeviceList {
    state
        .plan
        .get(resource)
        .map(|devices| {
            devices
                .iter()
                .map(|d| AdvertisedDevice {
                    healthy: d.healthy && !state.faults.contains_key(&d.id),
                    ..d.clone()
                })
                .collect()
        })
        .unwrap_or_else(|| Arc::from(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, resource: &str) -> AdvertisedDevice {
        AdvertisedDevice {
            id: id.into(),
            resource: resource.into(),
            numa_node: Some(0),
            healthy: true,
            gpu_uuid: "GPU-0".into(),
            gpu_index: 0,
            mig: None,
        }
    }

    fn plan() -> ResourcePlan {
        ResourcePlan::from([
            (
                "r/a".to_string(),
                vec![device("a1", "r/a"), device("a2", "r/a")],
            ),
            ("r/b".to_string(), vec![device("b1", "r/b")]),
        ])
    }

    #[test]
    fn faults_overlay_health_and_notify_only_the_touched_resource() {
        let manager = ResourceManager::new(plan());
        let mut a = manager.subscribe("r/a").unwrap();
        let mut b = manager.subscribe("r/b").unwrap();
        a.mark_unchanged();
        b.mark_unchanged();
        assert_eq!(
            manager.set_fault(&["a2".into()], Some("xid 79")),
            vec!["a2".to_string()]
        );
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        assert!(!manager.lookup("a2").unwrap().healthy);
        assert_eq!(
            manager.faults().get("a2").map(String::as_str),
            Some("xid 79")
        );
        // Marking again is no change; clearing is.
        assert!(manager.set_fault(&["a2".into()], Some("xid 79")).is_empty());
        assert_eq!(
            manager.set_fault(&["a2".into()], None),
            vec!["a2".to_string()]
        );
        assert!(manager.lookup("a2").unwrap().healthy);
    }

    #[test]
    fn plan_updates_keep_faults_and_refuse_new_resource_sets() {
        let manager = ResourceManager::new(plan());
        manager.set_fault(&["b1".into()], Some("xid 48"));
        let mut next = plan();
        next.get_mut("r/a").unwrap().pop();
        manager.update_plan(next).unwrap();
        assert_eq!(manager.snapshot("r/a").unwrap().len(), 1);
        assert!(
            !manager.lookup("b1").unwrap().healthy,
            "a rediscovery does not clear a fault"
        );
        let mut other = plan();
        other.remove("r/b");
        let err = manager.update_plan(other).unwrap_err();
        assert_eq!(err.new, vec!["r/a".to_string()]);
        assert_eq!(manager.all_devices().len(), 2);
        assert!(manager.lookup("nope").is_none());
    }
}
