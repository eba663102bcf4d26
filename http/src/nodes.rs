//! The processes that share a store, as a feed shared by them knows them: `GET /nodes` and the
//! dashboard's Nodes view. On a store of one process there are none to list.

use std::future::Future;
use std::pin::Pin;

use durable_jobs::Timestamp;
use serde_json::{json, Value};

use crate::wire::iso;

/// One process sharing the store, as its last heartbeat described it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// Its engine's lease owner ([`Engine::lease_owner`](durable_jobs::Engine::lease_owner)):
    /// the name on the runs and instances it holds.
    pub id: String,
    /// The machine's host name.
    pub host: String,
    /// The process id on that machine.
    pub pid: u32,
    /// When the node joined the feed.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub last_seen: Timestamp,
    /// Whether this is the process answering.
    pub this_node: bool,
    /// Step runs it holds a lease on.
    pub leased_runs: u64,
    /// Instances it holds while it runs them.
    pub leased_instances: u64,
}

/// A lease owner that is not a live node: a process that died holding leases (they lapse and
/// are taken over), or an engine that did not join the feed.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseHolder {
    /// The lease owner.
    pub owner: String,
    /// Step runs leased by it.
    pub leased_runs: u64,
    /// Instances leased by it.
    pub leased_instances: u64,
}

/// The live nodes and the leases held outside them.
#[derive(Clone, Debug, PartialEq)]
pub struct Nodes {
    /// The database's time when read.
    pub now: Timestamp,
    /// Nodes whose last heartbeat is recent enough, oldest first.
    pub nodes: Vec<NodeInfo>,
    /// Lease owners without a live node.
    pub other_holders: Vec<LeaseHolder>,
}

/// An error reading the nodes.
pub type NodesError = Box<dyn std::error::Error + Send + Sync>;

/// What [`EventFeed::nodes`](crate::sse::feed::EventFeed::nodes) returns.
pub type NodesFuture<'a> = Pin<Box<dyn Future<Output = Result<Nodes, NodesError>> + Send + 'a>>;

/// `GET /nodes`'s body: `shared: false` and no nodes for one process.
pub(crate) fn to_json(nodes: Option<&Nodes>) -> Value {
    let Some(n) = nodes else {
        return json!({ "shared": false, "nodes": [], "otherHolders": [] });
    };
    json!({
        "shared": true,
        "now": iso(n.now),
        "nodes": n.nodes.iter().map(|node| json!({
            "id": node.id,
            "host": node.host,
            "pid": node.pid,
            "startedAt": iso(node.started_at),
            "lastSeen": iso(node.last_seen),
            "self": node.this_node,
            "leasedRuns": node.leased_runs,
            "leasedInstances": node.leased_instances,
        })).collect::<Vec<_>>(),
        "otherHolders": n.other_holders.iter().map(|h| json!({
            "owner": h.owner,
            "leasedRuns": h.leased_runs,
            "leasedInstances": h.leased_instances,
        })).collect::<Vec<_>>(),
    })
}
