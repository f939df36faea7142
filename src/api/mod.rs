//! Wire and object types shared by every component: the error model, the resource table,
//! NATS subjects, request envelopes, the MessagePack codec and selectors. Nothing here talks
//! to the network or holds state.

pub mod codec;
pub mod meta;
pub mod packed;
pub mod resource;
pub mod selector;
pub mod status;
pub mod subject;
pub mod wire;

pub use resource::ResourceInfo;
pub use status::Status;
