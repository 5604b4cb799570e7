//! Dead-letter tooling (`p2c dlq list` / `replay`): stuck messages listed with their code
//! and reason, selected by entity or code, put back and then applied, on the embedded
//! queue and on SQS (moto).

use crate::common::{account, world};
use p2c_core::demo::World;
use p2c_core::dlq::{list, render, replay, Filter};
use p2c_core::ports::QueueName;

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_by_entity_and_code_embedded() {
    let (w, _d) = world().await;
    stuck_then_replayed(w).await;
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_by_entity_and_code_on_aws() {
    stuck_then_replayed(crate::common::world_aws().await).await;
}

async fn stuck_then_replayed(w: World) {
    for (number, refusal) in [
        ("ACC-DLQ-1", "Name must not be blank"),
        ("ACC-DLQ-2", "Customer template CUST-EU does not exist"),
    ] {
        w.bc().inject(p2c_core::sim::Fault {
            matching: "POST customers".into(),
            status: 400,
            retry_after: None,
            message: refusal.into(),
        });
        w.dataverse()
            .create("accounts", account(number, "Stuck Ltd"))
            .expect("account");
        w.settle().await.expect("settles");
    }
    let dl = &w.pipeline.store;
    let all = list(dl, &Filter::default()).await.expect("list");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all
        .iter()
        .all(|d| d.code == "target_refused" && d.queue == QueueName::ToErp));
    let text = render(&all);
    assert!(
        text.contains("2 dead letter(s): 2 target_refused"),
        "{text}"
    );
    assert!(
        text.contains("account:ACC-DLQ-1") && text.contains("Name must not be blank"),
        "{text}"
    );

    let one = Filter {
        entity: Some("account:ACC-DLQ-1".into()),
        ..Default::default()
    };
    assert_eq!(list(dl, &one).await.expect("list").len(), 1);
    let none = Filter {
        code: Some("rule_failed".into()),
        ..Default::default()
    };
    assert!(list(dl, &none).await.expect("list").is_empty());
    let elsewhere = Filter {
        queue: Some(QueueName::ToCrm),
        ..Default::default()
    };
    assert!(list(dl, &elsewhere).await.expect("list").is_empty());

    assert_eq!(replay(dl, &one).await.expect("replay"), 1);
    w.settle().await.expect("settles");
    assert!(w.bc().find("customers", "number", "ACC-DLQ-1").is_some());
    assert!(w.bc().find("customers", "number", "ACC-DLQ-2").is_none());
    let left = list(dl, &Filter::default()).await.expect("list");
    assert_eq!(left.len(), 1);
    assert!(left[0].reason.contains("CUST-EU"), "{}", left[0].reason);

    let by_code = Filter {
        code: Some("target_refused".into()),
        ..Default::default()
    };
    assert_eq!(replay(dl, &by_code).await.expect("replay"), 1);
    w.settle().await.expect("settles");
    assert!(w.bc().find("customers", "number", "ACC-DLQ-2").is_some());
    assert!(list(dl, &Filter::default()).await.expect("list").is_empty());
    assert_eq!(w.bc().creates("customers"), 2, "each customer created once");
}
