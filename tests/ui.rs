//! Misuse of `gather!` is a compile error at the tokens at fault: one mistake per file in
//! `tests/ui/`, with the message a user sees beside it. After a deliberate change of a
//! message, regenerate with `TRYBUILD=overwrite cargo test --test ui` and read the diff.

#[test]
fn misuse_is_a_compile_error_at_the_tokens_at_fault() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
