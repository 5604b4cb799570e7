//! The shipped rules on arbitrary inputs: the first byte picks a rule, the rest is its JSON
//! input. A rule may reject or fail (its limits stop it), but never panics the host, and a
//! result it returns is JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2c_core::rules::{EmbeddedLoader, RuleSet};
use std::sync::OnceLock;

fn rules() -> &'static (RuleSet, Vec<String>) {
    static RULES: OnceLock<(RuleSet, Vec<String>)> = OnceLock::new();
    RULES.get_or_init(|| {
        let rules = RuleSet::load(&EmbeddedLoader).expect("the shipped rules load");
        let names = rules.script_names().cloned().collect();
        (rules, names)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    let Ok(input) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let (rules, names) = rules();
    let script = &names[pick as usize % names.len()];
    if let Ok(out) = rules.eval(script, &input) {
        assert!(serde_json::to_string(&out).is_ok());
    }
});
