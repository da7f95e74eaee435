//! The store's metrics in the Prometheus text format.
//!
//! ```text
//! cargo run --example metrics
//! ```
//!
//! StrataKV records through the `metrics` facade and leaves the exporter to the program that
//! links it. Here that program installs `metrics-exporter-prometheus`'s recorder (without its
//! HTTP listener: a daemon would serve `render()` on its own `/metrics` endpoint), describes
//! the store's metrics so that each gets a `# HELP` line, and only then opens the store, whose
//! hot-path counters are registered at open. A small workload on a store with a local folder
//! standing in for a bucket writes, reads, flushes, compacts, collects garbage and uploads;
//! the rendered text is checked for what the workload must have moved, then printed.

use std::error::Error;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusBuilder;
use stratakv::object_store::local::LocalFileSystem;
use stratakv::remote::RemoteStorage;
use stratakv::{Lsn, SimpleRedo, Store, StoreOptions, Value};

const KEYS: u64 = 500;

/// The value of the sample `name` with exactly these labels (`{}` for none) in `text`.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    stratakv::metrics::describe();

    let dir = tempfile::tempdir()?;
    let bucket = tempfile::tempdir()?;
    let remote = RemoteStorage::new(
        Arc::new(LocalFileSystem::new_with_prefix(bucket.path())?),
        "tenants/acme".into(),
    );
    let store = Store::open(
        StoreOptions::new(dir.path().join("node"))
            .remote(remote)
            .background_period(None)
            .gc_horizon(Some(KEYS)),
    )
    .await?;
    let main = store.create_timeline("main").await?;
    let mut w = main.writer()?;
    let mut lsn = 0;
    for round in 0..3u64 {
        for k in 0..KEYS {
            lsn += 1;
            let key = format!("page/{k:04}");
            let value = if round == 0 {
                Value::image(format!("page {k}"))
            } else {
                Value::delta(SimpleRedo::append(format!(", v{round}").as_bytes()))
            };
            w.put(key.as_bytes(), Lsn(lsn), value)?;
            w.finish_write(Lsn(lsn))?;
        }
        main.flush().await?;
    }
    for k in 0..KEYS {
        let v = main
            .get(format!("page/{k:04}").as_bytes(), Lsn(lsn))
            .await?;
        assert_eq!(v.as_deref(), Some(format!("page {k}, v1, v2").as_bytes()));
    }
    main.compact().await?;
    main.gc().await?;
    store.wait_for_upload().await?;

    let text = handle.render();
    let id = main.id();
    let puts = sample(&text, "stratakv_puts_total", "");
    assert_eq!(puts, Some((3 * KEYS) as f64), "{text}");
    assert_eq!(sample(&text, "stratakv_reads_total", ""), Some(KEYS as f64));
    assert_eq!(
        sample(&text, "stratakv_read_redo_records_total", ""),
        Some((2 * KEYS) as f64)
    );
    assert_eq!(
        sample(&text, "stratakv_jobs_total", "job=\"flush\""),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "stratakv_jobs_total", "job=\"compaction\""),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "stratakv_timeline_last_record_lsn",
            &format!("timeline_id=\"{id}\"")
        ),
        Some(lsn as f64)
    );
    assert_eq!(
        sample(
            &text,
            "stratakv_timeline_remote_consistent_lsn",
            &format!("timeline_id=\"{id}\"")
        ),
        Some(main.remote_consistent_lsn().0 as f64)
    );
    assert!(sample(&text, "stratakv_remote_uploads_total", "").is_some_and(|n| n >= 4.0));
    assert!(text.contains("# HELP stratakv_read_layers_visited"));
    assert!(text.contains("stratakv_read_layers_visited{quantile=\"0.5\"}"));
    println!("{text}");
    drop(w);
    store.close().await?;
    Ok(())
}
