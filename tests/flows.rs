//! Flows and delivery paths beyond the demo story.

use crate::common::{account, world};
use serde_json::json;

#[tokio::test]
async fn a_business_central_collection_notification_expands_into_one_event_per_record() {
    let (w, _d) = world().await;
    for (n, name) in [("C-1", "Valve"), ("C-2", "Hose"), ("C-3", "Clamp")] {
        w.bc()
            .create_item(n, name, "10.00", "PCS", "PARTS")
            .expect("item");
    }
    // Over 1,000 changes in 30 s: BC sends one `collection` notification instead.
    let _single = w.bc().outbox().take();
    let body = json!({"value": [{
        "subscriptionId": "sub-items", "clientState": w.bc_client_state, "expirationDateTime": "2026-12-01T00:00:00Z",
        "resource": format!("/api/v2.0/companies({})/items?$filter=lastDateTimeModified%20gt%202026-05-14T09:29:00Z", w.bc().company()),
        "changeType": "collection", "lastModifiedDateTime": "2026-05-14T09:30:30.503Z"
    }]});
    let r = reqwest::Client::new()
        .post(format!("{}/webhooks/bc", w.webhook_url))
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 202);
    w.settle().await.expect("settles");
    for n in ["C-1", "C-2", "C-3"] {
        assert!(
            w.dataverse().find("products", "productnumber", n).is_some(),
            "{n} synced from the collection"
        );
    }
}

#[tokio::test]
async fn an_oversized_dataverse_event_is_read_back_through_the_web_api() {
    let (w, _d) = world().await;
    w.dataverse()
        .create("accounts", account("ACC-BIG", "Big Payload Ltd"))
        .expect("account");
    let mut hook = w.crm.outbox().take().remove(0);
    // What Dataverse sends over 256 KB: no images, no parameters, and the header.
    for k in ["InputParameters", "PreEntityImages", "PostEntityImages"] {
        hook.body[k] = json!([]);
    }
    hook.body["ParentContext"] = json!(null);
    hook.headers
        .push(("x-ms-dynamics-msg-size-exceeded".into(), "true".into()));
    let (status, _) = hook.send(&reqwest::Client::new()).await.expect("sent");
    assert_eq!(status, 202);
    w.settle().await.expect("settles");
    assert_eq!(
        w.bc()
            .find("customers", "number", "ACC-BIG")
            .expect("customer")["displayName"],
        json!("Big Payload Ltd")
    );
}

#[tokio::test]
async fn a_contact_follows_its_account_into_the_erp() {
    let (w, _d) = world().await;
    w.dataverse()
        .create("accounts", account("ACC-CON", "Contact Co"))
        .expect("account");
    w.dataverse()
        .create("contacts", json!({"firstname": "Robert", "lastname": "Townes", "emailaddress1": "robert.townes@contoso.example",
                                    "parentcustomerid_account@odata.bind": "/accounts(accountnumber='ACC-CON')"}))
        .expect("contact");
    w.settle().await.expect("settles");
    let contacts = w.bc().records("contacts");
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["displayName"], json!("Robert Townes"));
    assert_eq!(contacts[0]["email"], json!("robert.townes@contoso.example"));
}
