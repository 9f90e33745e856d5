//! The challenge's token data: binary shards and the BOS-delimited documents inside them.

mod docs;
mod shard;
mod stream;

pub use docs::{find_documents, Document};
pub use shard::{load_tokens, resolve_data_paths, Shard, SHARD_MAGIC, SHARD_VERSION};
pub use stream::{Batch, StreamPos, TokenStream};

/// Token id that starts every document.
pub const BOS_ID: u32 = 1;
