//! The checked-in header must be exactly what build.rs generates from the current sources.

#[test]
fn checked_in_header_matches_generated() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/cbslot.h"));
    let checked_in = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/include/cbslot.h"));
    assert!(
        generated == checked_in,
        "include/cbslot.h is stale: regenerate it with `CBSLOT_UPDATE_HEADER=1 cargo build` and commit it.\n\
         First difference at line {}",
        generated.lines().zip(checked_in.lines()).position(|(a, b)| a != b).map_or(0, |n| n + 1)
    );
}
