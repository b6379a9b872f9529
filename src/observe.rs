//! Observability: per-namespace counters, the optional `metrics` facade and
//! the optional `tracing` events.

use crate::stats::{Counter, NamespaceStats, Stats};

/// Emits a `tracing` event when the `tracing` feature is on; compiles to
/// nothing otherwise (the arguments are not evaluated).
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {{
        #[cfg(feature = "tracing")]
        {
            tracing::$level!(target: "idemkv", $($arg)+);
        }
    }};
}
pub(crate) use event;

/// Claim outcomes counted for one namespace.
#[derive(Default)]
pub(crate) struct NamespaceCounters {
    pub claims: Counter,
    pub acquired: Counter,
    pub replays: Counter,
    pub in_progress: Counter,
    pub mismatches: Counter,
}

/// The namespaces an operator named, each a key prefix.
#[derive(Default)]
pub(crate) struct Namespaces {
    list: Vec<(String, Box<[u8]>, NamespaceCounters)>,
}

impl Namespaces {
    pub(crate) fn new(named: &[(String, Box<[u8]>)]) -> Namespaces {
        Namespaces {
            list: named
                .iter()
                .map(|(name, prefix)| (name.clone(), prefix.clone(), NamespaceCounters::default()))
                .collect(),
        }
    }

    /// The counters of the first namespace whose prefix starts `key`.
    /// Free when no namespace is named.
    pub(crate) fn of(&self, key: &[u8]) -> Option<&NamespaceCounters> {
        self.list
            .iter()
            .find(|(_, prefix, _)| key.starts_with(prefix))
            .map(|(_, _, c)| c)
    }

    pub(crate) fn snapshot(&self) -> Vec<NamespaceStats> {
        self.list
            .iter()
            .map(|(name, _, c)| NamespaceStats {
                name: name.clone(),
                claims: c.claims.get(),
                acquired: c.acquired.get(),
                replays: c.replays.get(),
                in_progress: c.in_progress.get(),
                mismatches: c.mismatches.get(),
            })
            .collect()
    }
}

/// Publishes a snapshot through the `metrics` facade: counters as
/// `idemkv_<name>_total`, sizes as gauges, namespace counters with a
/// `namespace` label.
#[cfg(feature = "metrics")]
pub(crate) fn publish(stats: &Stats) {
    use metrics::{counter, gauge};
    let counters = [
        ("idemkv_claims_total", stats.claims),
        ("idemkv_acquired_total", stats.acquired),
        ("idemkv_replays_total", stats.replays),
        ("idemkv_in_progress_total", stats.in_progress),
        ("idemkv_mismatches_total", stats.mismatches),
        ("idemkv_takeovers_total", stats.takeovers),
        ("idemkv_completes_total", stats.completes),
        ("idemkv_releases_total", stats.releases),
        ("idemkv_lease_extensions_total", stats.lease_extensions),
        ("idemkv_lease_lost_total", stats.lease_lost),
        ("idemkv_removes_total", stats.removes),
        ("idemkv_seen_first_total", stats.seen_first),
        ("idemkv_seen_duplicates_total", stats.seen_duplicates),
        ("idemkv_expirations_total", stats.expirations),
        ("idemkv_claim_waits_total", stats.claim_waits),
        ("idemkv_bytes_appended_total", stats.bytes_appended),
        ("idemkv_fsyncs_total", stats.fsyncs),
        ("idemkv_hint_bytes_written_total", stats.hint_bytes_written),
        ("idemkv_zero_bytes_written_total", stats.zero_bytes_written),
        ("idemkv_segments_dropped_total", stats.segments_dropped),
        ("idemkv_segments_rewritten_total", stats.segments_rewritten),
        ("idemkv_bytes_reclaimed_total", stats.bytes_reclaimed),
        ("idemkv_bytes_copied_total", stats.bytes_copied),
        ("idemkv_entries_evicted_total", stats.entries_evicted),
    ];
    for (name, value) in counters {
        counter!(name).absolute(value);
    }
    let gauges = [
        ("idemkv_indexed_keys", stats.indexed_keys),
        ("idemkv_index_memory_bytes", stats.index_memory_bytes),
        ("idemkv_bytes_on_disk", stats.bytes_on_disk),
        ("idemkv_segments", stats.segments),
        ("idemkv_waiting", stats.waiting),
        ("idemkv_poisoned", u64::from(stats.poisoned)),
    ];
    for (name, value) in gauges {
        gauge!(name).set(value as f64);
    }
    for ns in &stats.namespaces {
        let per = [
            ("idemkv_namespace_claims_total", ns.claims),
            ("idemkv_namespace_acquired_total", ns.acquired),
            ("idemkv_namespace_replays_total", ns.replays),
            ("idemkv_namespace_in_progress_total", ns.in_progress),
            ("idemkv_namespace_mismatches_total", ns.mismatches),
        ];
        for (name, value) in per {
            counter!(name, "namespace" => ns.name.clone()).absolute(value);
        }
    }
}

/// Without the `metrics` feature there is nothing to publish to.
#[cfg(not(feature = "metrics"))]
pub(crate) fn publish(_stats: &Stats) {}
