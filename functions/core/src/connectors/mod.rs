//! Target-system connectors (writes) and source readers (re-reads), one per system,
//! over the shared [`http`] layer.

pub mod bc;
pub mod dataverse;
pub mod fo;
pub mod http;
pub mod memory;
pub mod oauth;
pub mod salesforce;
