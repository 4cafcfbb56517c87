//! The contract at run time: the descriptor pool decoded once from `trellis-proto`, and what kit
//! reads from its options (which methods are public).

use std::collections::HashSet;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, Value};

/// Every Trellis descriptor, with options and extensions.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(trellis_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("the embedded descriptor set is invalid: {e}"))
    })
}

/// `/package.Service/Method` paths of the methods marked `(trellis.common.v1.auth) = PUBLIC`.
pub fn public_methods() -> &'static HashSet<String> {
    static PUBLIC: OnceLock<HashSet<String>> = OnceLock::new();
    PUBLIC.get_or_init(|| {
        let pool = pool();
        let Some(auth) = pool.get_extension_by_name("trellis.common.v1.auth") else {
            return HashSet::new();
        };
        let public = auth.kind().as_enum().and_then(|e| e.get_value_by_name("PUBLIC")).map(|v| v.number());
        pool.services()
            .flat_map(|s| s.methods().collect::<Vec<_>>())
            .filter(|m| {
                let options = m.options();
                options.has_extension(&auth)
                    && matches!(options.get_extension(&auth).as_ref(), Value::EnumNumber(n) if Some(*n) == public)
            })
            .map(|m| format!("/{}/{}", m.parent_service().full_name(), m.name()))
            .collect()
    })
}
