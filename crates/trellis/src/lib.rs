//! The pieces of the `trellis` binary that tests reuse: the module registry.

use trellis_kit::Module;

/// The module of a service by name.
pub fn module(name: &str) -> Option<Module> {
    Some(match name {
        "identity" => trellis_identity::module(),
        "permissions" => trellis_permissions::module(),
        "tasks" => trellis_tasks::module(),
        "crm" => trellis_crm::module(),
        "documents" => trellis_documents::module(),
        "finance" => trellis_finance::module(),
        "notifications" => trellis_notifications::module(),
        _ => return None,
    })
}
