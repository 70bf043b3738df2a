//! The macro never panics: every input gives code or a `compile_error!`.

use proc_macro2::{TokenStream, TokenTree};

/// Valid calls whose tokens the mutations below start from.
const VALID: &[&str] = &[
    "fetch(1), fetch(2)",
    "policy = finish; a = fetch(1), b = fetch(2),",
    "policy = settle; async { 1 }, async move { x.await }",
    "policy = cancel, limit = 2, timeout = Duration::from_secs(1), spawn; f(), g()",
    "policy = race_ok; for url in urls => get(url)",
    "for (i, x) in xs.iter().enumerate() => async move { i + x }",
    "a = |x, y| x + y, b = foo::<A, B>(), c = S { a: 1 }",
];

fn expand(source: &str) -> String {
    let input: TokenStream = format!("[::gather] {source}")
        .parse()
        .expect("valid tokens");
    super::gather(input).to_string()
}

fn expand_trees(trees: &[TokenTree]) -> String {
    let mut input: TokenStream = "[::gather]".parse().expect("valid tokens");
    input.extend(trees.iter().cloned());
    super::gather(input).to_string()
}

#[test]
fn valid_calls_expand_without_errors_or_report_unavailable_features() {
    for source in VALID {
        let out = expand(source);
        let unavailable = out.contains("not available yet");
        assert!(
            !out.contains("compile_error") || unavailable,
            "{source}: {out}"
        );
    }
}

#[test]
fn broken_calls_are_errors_not_panics() {
    let broken = [
        "",
        ";",
        ";;",
        ",",
        ",,",
        "a,,b",
        "policy =",
        "policy = ;",
        "policy ;",
        "policy = cancel",
        "policy = cancel,",
        "policy = cancel, a",
        "spawn",
        "spawn,",
        "spawn;",
        "spawn = 1; a",
        "limit = 0; a",
        "limit = (0); a",
        "timeout; a",
        "for",
        "for x",
        "for x in",
        "for x in y",
        "for x in y =>",
        "for x in y => f(x), g",
        "for in y => f",
        "a =",
        "= a",
        "a = , b",
        "@ # $",
        "policy = 3; a",
        "policy = a::b; a",
        "policy = cancel; ; a",
        "a; b; c",
        "x => y",
        "policy = cancel policy = finish; a",
        "a b c",
    ];
    let failed: Vec<_> = broken
        .iter()
        .filter(|source| !expand(source).contains("compile_error"))
        .collect();
    assert!(failed.is_empty(), "no error for {failed:?}");
}

/// Every single deletion, duplication and swap of neighbours among the top-level tokens of
/// the valid calls, and a foreign token put at each position.
#[test]
fn mangled_calls_never_panic() {
    let foreign: TokenStream = "@".parse().expect("valid tokens");
    let foreign = foreign.into_iter().next().expect("one token");
    for source in VALID {
        let trees: Vec<TokenTree> = source
            .parse::<TokenStream>()
            .expect("valid")
            .into_iter()
            .collect();
        for i in 0..trees.len() {
            let mut deleted = trees.clone();
            deleted.remove(i);
            expand_trees(&deleted);

            let mut duplicated = trees.clone();
            duplicated.insert(i, trees[i].clone());
            expand_trees(&duplicated);

            let mut inserted = trees.clone();
            inserted.insert(i, foreign.clone());
            expand_trees(&inserted);

            if i + 1 < trees.len() {
                let mut swapped = trees.clone();
                swapped.swap(i, i + 1);
                expand_trees(&swapped);
            }
        }
    }
}
