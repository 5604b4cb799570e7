//! The active rule set of a running process, picked up from the rule store without a
//! restart: `p2c rules publish` and `p2c rules rollback` record an activation; each process
//! looks at most every `every` for a newer one, compiles it once and swaps it in. Events
//! already being processed finish on the rule set they started with; every decision's
//! audit entry names the version that made it.

use super::RuleSet;
use crate::error::RuleError;
use crate::ports::{Activation, RuleStore};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a running process looks for a newly activated rule set, unless told.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(30);

pub struct LiveRules {
    store: Arc<dyn RuleStore>,
    every: Duration,
    state: Mutex<State>,
}

struct State {
    rules: Arc<RuleSet>,
    checked: Option<Instant>,
    /// A version that would not load, not tried again (its failure is logged once).
    refused: Option<String>,
}

impl LiveRules {
    /// Starts from `fallback` (the rules the process was started with) until the store
    /// names an active version.
    pub fn new(store: Arc<dyn RuleStore>, fallback: Arc<RuleSet>, every: Duration) -> Self {
        Self {
            store,
            every,
            state: Mutex::new(State {
                rules: fallback,
                checked: None,
                refused: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rule set to use now: the active version, looked up at most every `every`. A
    /// store that cannot be read, or a version that does not load, keeps the current rules
    /// (and says so in the log): a bad publish never stops the pipeline.
    pub async fn current(&self) -> Arc<RuleSet> {
        let (rules, due) = {
            let st = self.state();
            let due = st.checked.is_none_or(|t| t.elapsed() >= self.every);
            (st.rules.clone(), due)
        };
        if !due {
            return rules;
        }
        self.state().checked = Some(Instant::now());
        let active = match self.store.activations(1).await {
            Ok(a) => a.into_iter().next(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the active rule set; keeping {}", rules.version);
                return rules;
            }
        };
        let Some(active) = active else {
            return rules;
        };
        if active.version == rules.version
            || self.state().refused.as_deref() == Some(&active.version)
        {
            return rules;
        }
        match self.load(&active.version).await {
            Ok(next) => {
                tracing::info!(from = %rules.version, to = %next.version, action = %active.action, "rule set changed");
                let next = Arc::new(next);
                self.state().rules = next.clone();
                next
            }
            Err(e) => {
                tracing::error!(version = %active.version, error = %e, "the active rule set does not load; keeping {}", rules.version);
                self.state().refused = Some(active.version);
                rules
            }
        }
    }

    async fn load(&self, version: &str) -> Result<RuleSet, RuleError> {
        let files = self
            .store
            .get_rules(version)
            .await
            .map_err(|e| RuleError::Config {
                message: e.to_string(),
            })?
            .ok_or_else(|| RuleError::Config {
                message: format!("rule set {version} is active but not stored"),
            })?;
        RuleSet::from_files(files)
    }
}

/// Stores `rules` and makes it active (`action`: publish or rollback). Returns the
/// activation, or an error when another activation came first (run it again).
pub async fn activate(
    store: &dyn RuleStore,
    files: &BTreeMap<String, String>,
    action: &str,
    by: &str,
) -> Result<Activation, RuleError> {
    let rules = RuleSet::from_files(files.clone())?;
    let io = |e: crate::error::StoreError| RuleError::Config {
        message: e.to_string(),
    };
    store.put_rules(&rules.version, files).await.map_err(io)?;
    let last = store.activations(1).await.map_err(io)?.into_iter().next();
    let activation = Activation {
        seq: last.as_ref().map_or(1, |a| a.seq + 1),
        version: rules.version.clone(),
        at: chrono::Utc::now(),
        by: by.to_string(),
        action: action.to_string(),
    };
    if store.activate(&activation).await.map_err(io)? {
        Ok(activation)
    } else {
        Err(RuleError::Config {
            message: "another publish or rollback happened at the same moment: run it again".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;
    use crate::rules::{EmbeddedLoader, RuleLoader};

    fn files() -> BTreeMap<String, String> {
        EmbeddedLoader.load().expect("rules")
    }

    fn changed(files: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut f = files.clone();
        let credit = f["credit_limit.rhai"]
            .replace("let hold_after_days = 60;", "let hold_after_days = 30;");
        assert_ne!(credit, f["credit_limit.rhai"]);
        f.insert("credit_limit.rhai".into(), credit);
        f
    }

    #[tokio::test]
    async fn a_running_process_picks_up_an_activation_within_the_interval_and_a_rollback() {
        let store = Arc::new(EmbeddedStore::in_memory().expect("store"));
        let base = Arc::new(RuleSet::from_files(files()).expect("rules"));
        let live = LiveRules::new(store.clone(), base.clone(), Duration::ZERO);
        assert_eq!(
            live.current().await.version,
            base.version,
            "nothing published: the start rules"
        );
        let first = activate(store.as_ref(), &files(), "publish", "ana")
            .await
            .expect("published");
        assert_eq!(
            (first.seq, first.version.as_str()),
            (1, base.version.as_str())
        );
        let next = activate(store.as_ref(), &changed(&files()), "publish", "ana")
            .await
            .expect("published");
        assert_eq!(next.seq, 2);
        assert_ne!(next.version, base.version);
        assert_eq!(live.current().await.version, next.version);
        let back = activate(store.as_ref(), &files(), "rollback", "ana")
            .await
            .expect("rolled back");
        assert_eq!(
            (back.seq, back.version.as_str()),
            (3, base.version.as_str())
        );
        assert_eq!(live.current().await.version, base.version);
        let history: Vec<(u64, String)> = store
            .activations(10)
            .await
            .expect("history")
            .into_iter()
            .map(|a| (a.seq, a.action))
            .collect();
        assert_eq!(
            history,
            vec![
                (3, "rollback".into()),
                (2, "publish".into()),
                (1, "publish".into())
            ]
        );
    }

    #[tokio::test]
    async fn the_store_is_looked_at_no_more_often_than_asked() {
        let store = Arc::new(EmbeddedStore::in_memory().expect("store"));
        let base = Arc::new(RuleSet::from_files(files()).expect("rules"));
        let live = LiveRules::new(store.clone(), base.clone(), Duration::from_secs(3600));
        assert_eq!(live.current().await.version, base.version);
        activate(store.as_ref(), &changed(&files()), "publish", "ana")
            .await
            .expect("published");
        // Checked a moment ago: the next look is an hour away.
        assert_eq!(live.current().await.version, base.version);
    }

    #[tokio::test]
    async fn a_stale_activation_loses_and_a_version_that_does_not_load_keeps_the_current_rules() {
        let store = Arc::new(EmbeddedStore::in_memory().expect("store"));
        activate(store.as_ref(), &files(), "publish", "ana")
            .await
            .expect("published");
        let stale = Activation {
            seq: 1,
            version: "r-other".into(),
            at: chrono::Utc::now(),
            by: "bo".into(),
            action: "publish".into(),
        };
        assert!(
            !store.activate(&stale).await.expect("answers"),
            "seq 1 is taken"
        );
        // A broken version activated behind the tools' back is refused, not run.
        let base = Arc::new(RuleSet::from_files(files()).expect("rules"));
        let mut broken = files();
        broken.insert("credit_limit.rhai".into(), "fn rule(input) { ".into());
        store.put_rules("r-broken", &broken).await.expect("stored");
        let act = Activation {
            seq: 2,
            version: "r-broken".into(),
            at: chrono::Utc::now(),
            by: "bo".into(),
            action: "publish".into(),
        };
        assert!(store.activate(&act).await.expect("answers"));
        let live = LiveRules::new(store.clone(), base.clone(), Duration::ZERO);
        assert_eq!(live.current().await.version, base.version);
        assert_eq!(live.current().await.version, base.version);
    }
}
