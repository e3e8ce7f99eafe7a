//! `#[guarded]` at compile time: what compiles, and the errors that point at the mistake.

#![cfg(feature = "macros")]

#[test]
fn guarded_compiles_and_explains() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
