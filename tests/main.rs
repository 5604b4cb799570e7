//! End-to-end tests: one binary, a module per feature. They run the real pipeline on the
//! embedded store against the simulated Dataverse and Business Central over loopback HTTP.

mod bad_input;
mod common;
mod crash;
mod demo_story;
mod dlq;
mod embedded_log;
mod fin_ops;
mod flows;
mod guarantees;
mod iam;
mod load;
mod moto;
mod payloads;
mod publish;
mod rules_cases;
mod salesforce;
mod sandbox;
mod senders;
mod store_contract;
