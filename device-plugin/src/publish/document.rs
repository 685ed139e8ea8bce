//! The latest inventory document the agent built, kept both ways its readers need it: parsed
//! for the metrics endpoint, serialised once for the publisher. Neither reader parses or
//! serialises per request.

use kubesched_core::inventory::NodeInventory;
use tokio::sync::watch;

/// One inventory document.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryDocument {
    inventory: NodeInventory,
    json: String,
}

impl InventoryDocument {
    /// The document of `inventory`.
    pub fn new(inventory: NodeInventory) -> Self {
        let json = inventory.to_json();
        InventoryDocument { inventory, json }
    }

    /// The inventory itself.
    pub fn inventory(&self) -> &NodeInventory {
        &self.inventory
    }

    /// Its JSON, as published on the Node annotation.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// The agent's latest document; `None` until it has built one.
pub type Documents = watch::Receiver<Option<std::sync::Arc<InventoryDocument>>>;
