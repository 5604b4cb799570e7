//! moto server (DynamoDB and SQS) on loopback for the AWS-adapter tests.
//!
//! `infra/test.sh` installs moto, starts one server and passes it in `P2C_MOTO_ENDPOINT`;
//! without that variable the first test that needs it starts `moto_server` itself on a
//! free loopback port, and a watchdog stops it when this test process ends. Only
//! 127.0.0.1 is ever targeted, with dummy credentials.

use p2c_core::aws::DynamoStore;
use std::sync::OnceLock;
use std::time::Duration;

static ENDPOINT: OnceLock<Result<String, String>> = OnceLock::new();

fn start() -> Result<String, String> {
    if let Ok(url) = std::env::var("P2C_MOTO_ENDPOINT") {
        return Ok(url);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    // The watchdog shell ends moto when this process (its parent's pid) is gone.
    let script = format!(
        "moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
         while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $m",
        pid = std::process::id()
    );
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start moto_server: {e}"))?;
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(url);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "moto_server did not start on port {port} within 10 s; install it with \
         `pip install 'moto[server]==5.2.1'` (infra/test.sh does)"
    ))
}

/// The moto endpoint (started on first use).
pub fn endpoint() -> String {
    match ENDPOINT.get_or_init(start) {
        Ok(url) => url.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// SDK configuration for moto: loopback endpoint, dummy credentials, fixed region.
pub async fn sdk_config() -> aws_config::SdkConfig {
    p2c_core::aws::local_config(&endpoint())
        .await
        .expect("moto is on loopback")
}

/// A unique name per test, so tests never share a table or queue.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A DynamoDB store on its own new table.
pub async fn dynamo() -> DynamoStore {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let store = DynamoStore::new(client, unique("p2c"));
    store.create_table().await.expect("table created on moto");
    store
}

/// The three FIFO queues and their dead-letter queues, new for this test.
pub async fn sqs(max_receives: u32) -> p2c_core::aws::SqsQueues {
    let client = aws_sdk_sqs::Client::new(&sdk_config().await);
    p2c_core::aws::SqsQueues::create(
        client,
        &unique("p2c"),
        max_receives,
        Duration::from_secs(60),
    )
    .await
    .expect("queues created on moto")
}
