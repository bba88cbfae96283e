//! Everything RabbitMQ: the job messages, the topology, and a connection
//! handle that reconnects.

mod broker;
mod message;
mod tiers;
mod topology;

pub use broker::{parse_nodes, Broker, BrokerTimeout, PublishError};
pub use message::{headers, Job};
pub use tiers::RetryTiers;
pub use topology::{Topology, DELIVERY_LIMIT, QUORUM_GROUP_SIZE};
