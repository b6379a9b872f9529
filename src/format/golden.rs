//! Pins the encoders to DESIGN.md: every field row of the layout tables and
//! every hex example there must match what the code writes.

use super::hint::{HINT_ENTRY_LEN, HINT_HEADER_LEN, HintEntry, HintHeader};
use super::record::{self, RECORD_HEADER_LEN, RecordFields, SYNC_MARK_LEN, SyncMark, Tag};
use super::segment::{SEGMENT_HEADER_LEN, SegmentHeader};

const DESIGN: &str = include_str!("../../DESIGN.md");

/// The lines between `<!-- golden:NAME -->` and `<!-- /golden:NAME -->`.
fn section(name: &str) -> Vec<&'static str> {
    let open = format!("<!-- golden:{name} -->");
    let close = format!("<!-- /golden:{name} -->");
    let start = DESIGN
        .find(&open)
        .unwrap_or_else(|| panic!("DESIGN.md lacks {open}"))
        + open.len();
    let end = start
        + DESIGN[start..]
            .find(&close)
            .unwrap_or_else(|| panic!("DESIGN.md lacks {close}"));
    DESIGN[start..end].lines().collect()
}

/// `(offset, size, field)` from the rows of a layout table.
fn layout(name: &str) -> Vec<(usize, usize, String)> {
    section(name)
        .into_iter()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let offset = cells.get(1)?.parse().ok()?;
            let size = cells.get(2)?.parse().ok()?;
            Some((offset, size, cells.get(3)?.trim_matches('`').to_string()))
        })
        .collect()
}

/// The bytes of the hex dump in a section (`0000: 01 02 ...` lines).
fn hex_dump(name: &str) -> Vec<u8> {
    section(name)
        .into_iter()
        .filter_map(|line| line.split_once(": "))
        .flat_map(|(_, bytes)| {
            bytes
                .split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        })
        .collect()
}

fn check_layout(name: &str, total: usize, encoded: &[u8], field_bytes: impl Fn(&str) -> Vec<u8>) {
    let rows = layout(name);
    assert!(!rows.is_empty(), "{name} table has no rows");
    let mut next = 0;
    for (offset, size, field) in rows {
        assert_eq!(
            offset, next,
            "{name}: `{field}` does not follow the previous row"
        );
        let want = field_bytes(&field);
        assert_eq!(want.len(), size, "{name}: `{field}` size");
        assert_eq!(
            &encoded[offset..offset + size],
            &want[..],
            "{name}: `{field}` bytes at {offset}"
        );
        next = offset + size;
    }
    assert_eq!(next, total, "{name}: rows cover the whole header");
}

fn example_segment_header() -> [u8; SEGMENT_HEADER_LEN] {
    SegmentHeader::new(3, 1000, crate::durability::Stream::Claims).encode()
}

fn example_record() -> Vec<u8> {
    let mut out = Vec::new();
    record::encode(
        &mut out,
        7,
        &RecordFields {
            tag: Tag::Complete,
            key: b"k1",
            value: b"ok",
            fingerprint: 0x1122_3344_5566_7788_99aa_bbcc_ddee_ff00,
            generation: 5,
            since_ms: 1_700_000_000_000,
            until_ms: 1_700_086_400_000,
        },
    );
    out
}

fn example_sync_mark() -> Vec<u8> {
    let mut out = Vec::new();
    record::encode_sync_mark(
        &mut out,
        &SyncMark {
            seq: 12,
            synced_len: 4096,
            written_at_ms: 1_700_000_000_000,
        },
    );
    out
}

fn example_hint_header() -> [u8; HINT_HEADER_LEN] {
    HintHeader {
        segment_id: 3,
        segment_len: 4096,
        first_ms: 1_700_000_000_000,
        last_ms: 1_700_000_060_000,
        last_seq: 1041,
        count: 30,
        records: 42,
        entries_crc: 0xdead_beef,
    }
    .encode()
}

fn example_hint_entry() -> Vec<u8> {
    let mut out = Vec::new();
    HintEntry {
        hash: 0x0123_4567_89ab_cdef,
        tag: Tag::Complete,
        until_ms: 1_700_086_400_000,
        offset: 32,
        len: 244,
    }
    .encode_into(&mut out);
    out
}

#[test]
fn hint_tables_match_encoder() {
    let h = example_hint_header();
    check_layout("hint-header", HINT_HEADER_LEN, &h, |field| match field {
        "magic" => b"IDEMKVHT".to_vec(),
        "version" => 1u32.to_le_bytes().to_vec(),
        "segment_id" => 3u32.to_le_bytes().to_vec(),
        "segment_len" => 4096u64.to_le_bytes().to_vec(),
        "first_ms" => 1_700_000_000_000u64.to_le_bytes().to_vec(),
        "last_ms" => 1_700_000_060_000u64.to_le_bytes().to_vec(),
        "last_seq" => 1041u64.to_le_bytes().to_vec(),
        "count" => 30u32.to_le_bytes().to_vec(),
        "entries_crc" => 0xdead_beefu32.to_le_bytes().to_vec(),
        "records" => 42u32.to_le_bytes().to_vec(),
        "crc" => crc32fast::hash(&h[..60]).to_le_bytes().to_vec(),
        other => panic!("unknown hint header field `{other}` in DESIGN.md"),
    });
    let e = example_hint_entry();
    check_layout("hint-entry", HINT_ENTRY_LEN, &e, |field| match field {
        "key_hash" => 0x0123_4567_89ab_cdefu64.to_le_bytes().to_vec(),
        "tag_time" => ((2u64 << 56) | 1_700_086_400_000).to_le_bytes().to_vec(),
        "offset" => 32u32.to_le_bytes().to_vec(),
        "len" => 244u32.to_le_bytes().to_vec(),
        other => panic!("unknown hint entry field `{other}` in DESIGN.md"),
    });
}

#[test]
fn segment_header_table_matches_encoder() {
    let h = example_segment_header();
    check_layout(
        "segment-header",
        SEGMENT_HEADER_LEN,
        &h,
        |field| match field {
            "magic" => b"IDEMKVSG".to_vec(),
            "version" => super::FORMAT_VERSION.to_le_bytes().to_vec(),
            "segment_id" => 3u32.to_le_bytes().to_vec(),
            "first_seq" => 1000u64.to_le_bytes().to_vec(),
            "flags" => 1u32.to_le_bytes().to_vec(),
            "crc" => crc32fast::hash(&h[..28]).to_le_bytes().to_vec(),
            other => panic!("unknown segment header field `{other}` in DESIGN.md"),
        },
    );
}

#[test]
fn record_header_table_matches_encoder() {
    let r = example_record();
    check_layout(
        "record-header",
        RECORD_HEADER_LEN,
        &r,
        |field| match field {
            "crc" => crc32fast::hash(&r[4..]).to_le_bytes().to_vec(),
            "tag" => vec![Tag::Complete as u8],
            "flags" => vec![0],
            "key_len" => 2u16.to_le_bytes().to_vec(),
            "value_len" => 2u32.to_le_bytes().to_vec(),
            "seq" => 7u64.to_le_bytes().to_vec(),
            "fingerprint" => 0x1122_3344_5566_7788_99aa_bbcc_ddee_ff00u128
                .to_le_bytes()
                .to_vec(),
            "generation" => 5u64.to_le_bytes().to_vec(),
            "since_ms" => 1_700_000_000_000u64.to_le_bytes().to_vec(),
            "until_ms" => 1_700_086_400_000u64.to_le_bytes().to_vec(),
            other => panic!("unknown record field `{other}` in DESIGN.md"),
        },
    );
}

#[test]
fn sync_mark_table_matches_encoder() {
    let m = example_sync_mark();
    check_layout("sync-mark", SYNC_MARK_LEN, &m, |field| match field {
        "crc" => crc32fast::hash(&m[4..]).to_le_bytes().to_vec(),
        "tag" => vec![record::SYNC_MARK_TAG],
        "flags" => vec![0],
        "key_len" => vec![0; 2],
        "value_len" => vec![0; 4],
        "seq" => 12u64.to_le_bytes().to_vec(),
        "reserved" | "reserved_2" => vec![0; 16],
        "reserved_3" => vec![0; 8],
        "synced_len" => 4096u64.to_le_bytes().to_vec(),
        "written_at_ms" => 1_700_000_000_000u64.to_le_bytes().to_vec(),
        other => panic!("unknown sync mark field `{other}` in DESIGN.md"),
    });
}

#[test]
fn tag_table_matches_enum() {
    let rows: Vec<(u8, String)> = section("tags")
        .into_iter()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            Some((
                cells.get(1)?.parse().ok()?,
                cells.get(2)?.trim_matches('`').to_string(),
            ))
        })
        .collect();
    assert_eq!(rows.len(), 5, "DESIGN.md lists every tag");
    for (value, name) in rows {
        let tag = Tag::try_from(value).unwrap_or_else(|v| panic!("DESIGN.md tag {v} is not a Tag"));
        assert_eq!(format!("{tag:?}"), name, "tag {value}");
    }
    assert!(Tag::try_from(0).is_err() && Tag::try_from(6).is_err());
}

/// The dump format DESIGN.md uses, printed when an example is stale.
fn dump(bytes: &[u8]) -> String {
    let lines: Vec<String> = bytes
        .chunks(16)
        .enumerate()
        .map(|(i, chunk)| {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}: {}", i * 16, hex.join(" "))
        })
        .collect();
    lines.join("\n")
}

#[test]
fn hex_examples_match_encoder() {
    for (name, bytes) in [
        ("segment-header-example", example_segment_header().to_vec()),
        ("record-example", example_record()),
        ("sync-mark-example", example_sync_mark()),
        (
            "hint-example",
            [example_hint_header().to_vec(), example_hint_entry()].concat(),
        ),
    ] {
        assert!(
            hex_dump(name) == bytes,
            "DESIGN.md `{name}` is stale; the encoder writes:\n{}",
            dump(&bytes)
        );
    }
}
