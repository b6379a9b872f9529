//! What operators see: per-namespace claim counters in `Stats`, the same
//! counters through the `metrics` facade, and `tracing` events for open,
//! rollover, compaction and poisoning.

use idemkv::{Claim, Fingerprint, Options, Store, scoped_key};

fn key(route: &str, tenant: &str, client: &str) -> Vec<u8> {
    scoped_key([route, tenant, client])
}

/// Two endpoints named as namespaces, one left out; a mix of outcomes.
fn exercise(store: &Store) {
    let fp = Fingerprint::of(b"body");
    let other = Fingerprint::of(b"other body");
    for i in 0..3 {
        let k = key("POST /v1/charges", "acme", &format!("c{i}"));
        let Claim::Acquired(t) = store.claim(&k, fp).unwrap() else {
            panic!("fresh key")
        };
        store.complete(t, b"201").unwrap();
        assert!(matches!(store.claim(&k, fp).unwrap(), Claim::Replay(_)));
    }
    let k = key("POST /v1/charges", "acme", "c0");
    assert!(matches!(store.claim(&k, other).unwrap(), Claim::Mismatch));
    let k = key("POST /v1/orders", "acme", "o1");
    let Claim::Acquired(_held) = store.claim(&k, fp).unwrap() else {
        panic!("fresh key")
    };
    assert!(matches!(
        store.claim(&k, fp).unwrap(),
        Claim::InProgress { .. }
    ));
    let k = key("GET /v1/unnamed", "acme", "u1");
    assert!(matches!(store.claim(&k, fp).unwrap(), Claim::Acquired(_)));
}

fn named(options: Options) -> Options {
    options
        .namespace("charges", scoped_key(["POST /v1/charges"]))
        .namespace("orders", scoped_key(["POST /v1/orders"]))
}

#[test]
fn claims_are_counted_per_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let store = named(Options::new()).open(dir.path()).unwrap();
    exercise(&store);
    let stats = store.stats();
    assert_eq!(stats.claims, 10);
    let [charges, orders] = &stats.namespaces[..] else {
        panic!("two namespaces, in the order named: {:?}", stats.namespaces)
    };
    assert_eq!(charges.name, "charges");
    assert_eq!(
        (
            charges.claims,
            charges.acquired,
            charges.replays,
            charges.in_progress,
            charges.mismatches
        ),
        (7, 3, 3, 0, 1)
    );
    assert_eq!(orders.name, "orders");
    assert_eq!(
        (
            orders.claims,
            orders.acquired,
            orders.replays,
            orders.in_progress,
            orders.mismatches
        ),
        (2, 1, 0, 1, 0)
    );
}

#[test]
fn too_many_or_unnamed_namespaces_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let many = (0..=idemkv::MAX_NAMESPACES).fold(Options::new(), |o, i| {
        o.namespace(format!("n{i}"), format!("p{i}"))
    });
    let err = many.open(dir.path()).unwrap_err();
    assert!(matches!(err, idemkv::Error::InvalidOptions(_)), "{err}");
    assert!(err.to_string().contains("namespaces"), "{err}");
    let err = Options::new()
        .namespace("", "x")
        .open(dir.path())
        .unwrap_err();
    assert!(matches!(err, idemkv::Error::InvalidOptions(_)), "{err}");
}

#[cfg(feature = "metrics")]
mod metrics_facade {
    use super::*;
    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    /// Keeps the last value of every counter and gauge, by name and labels.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<BTreeMap<String, f64>>>);

    struct Slot(Capture, String);

    impl CounterFn for Slot {
        fn increment(&self, value: u64) {
            *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += value as f64;
        }
        fn absolute(&self, value: u64) {
            self.0
                .0
                .lock()
                .unwrap()
                .insert(self.1.clone(), value as f64);
        }
    }

    impl GaugeFn for Slot {
        fn increment(&self, value: f64) {
            *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
        }
        fn decrement(&self, value: f64) {
            *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() -= value;
        }
        fn set(&self, value: f64) {
            self.0.0.lock().unwrap().insert(self.1.clone(), value);
        }
    }

    fn name(key: &Key) -> String {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Slot(self.clone(), name(key))))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(Arc::new(Slot(self.clone(), name(key))))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn stats_are_published_through_the_facade() {
        let capture = Capture::default();
        let dir = tempfile::tempdir().unwrap();
        let store = named(Options::new())
            .metrics_interval(None)
            .open(dir.path())
            .unwrap();
        exercise(&store);
        metrics::with_local_recorder(&capture, || store.publish_metrics());
        let seen = capture.0.lock().unwrap().clone();
        let stats = store.stats();
        assert_eq!(seen["idemkv_claims_total{}"], stats.claims as f64);
        assert_eq!(seen["idemkv_replays_total{}"], stats.replays as f64);
        assert_eq!(seen["idemkv_fsyncs_total{}"], stats.fsyncs as f64);
        assert_eq!(seen["idemkv_indexed_keys{}"], stats.indexed_keys as f64);
        assert_eq!(
            seen["idemkv_namespace_replays_total{namespace=charges}"],
            3.0
        );
        assert_eq!(
            seen["idemkv_namespace_in_progress_total{namespace=orders}"],
            1.0
        );
        assert_eq!(seen["idemkv_poisoned{}"], 0.0);
    }
}

#[cfg(feature = "tracing")]
mod tracing_events {
    use super::*;
    use idemkv::storage::{SimOp, SimStorage};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// Collects each event's level and message.
    #[derive(Clone, Default)]
    struct Events(Arc<Mutex<Vec<String>>>);

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl Subscriber for Events {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut m = Message(String::new());
            event.record(&mut m);
            let line = format!("{} {}", event.metadata().level(), m.0);
            self.0.lock().unwrap().push(line);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn open_rollover_compaction_and_poison_emit_events() {
        let events = Events::default();
        let sim = SimStorage::new();
        let clock = Arc::new(idemkv::ManualClock::new(1_000_000));
        tracing::subscriber::with_default(events.clone(), || {
            let store = Options::new()
                .storage(Arc::new(sim.clone()))
                .clock(clock.clone())
                .segment_size(idemkv::MIN_SEGMENT_SIZE)
                .max_response_len(1024)
                .retention(Duration::from_secs(1))
                .background_compaction(false)
                .open("/s")
                .unwrap();
            for i in 0..200 {
                assert!(
                    store
                        .mark_seen(format!("m{i}"), Duration::from_secs(1))
                        .is_ok()
                );
            }
            clock.advance(Duration::from_secs(5));
            let report = store.compact().unwrap();
            assert!(report.segments_dropped > 0);
            sim.fail(SimOp::Write, 1, std::io::ErrorKind::Other);
            sim.fail(SimOp::Sync, 1, std::io::ErrorKind::Other);
            let _ = store.mark_seen("after", Duration::from_secs(1));
            let _ = store.sync();
            assert!(store.stats().poisoned);
        });
        let seen = events.0.lock().unwrap().clone();
        let has = |needle: &str| seen.iter().any(|e| e.contains(needle));
        assert!(has("INFO store opened"), "{seen:#?}");
        assert!(has("DEBUG segment rolled over"), "{seen:#?}");
        assert!(has("INFO compaction pass"), "{seen:#?}");
        assert!(has("ERROR store poisoned"), "{seen:#?}");
    }
}
