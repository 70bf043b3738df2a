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
fn valid_calls_expand_without_errors() {
    for source in VALID {
        let out = expand(source);
        assert!(!out.contains("compile_error"), "{source}: {out}");
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

/// The spans of the errors in `out`, if it is a `compile_error!` block: each error's message
/// literal carries the error's span.
fn error_lines(out: &TokenStream) -> Vec<usize> {
    fn walk(stream: TokenStream, lines: &mut Vec<usize>) {
        for tt in stream {
            match tt {
                TokenTree::Group(group) => walk(group.stream(), lines),
                TokenTree::Literal(lit) => lines.push(lit.span().start().line),
                _ => {}
            }
        }
    }
    let mut lines = Vec::new();
    if out.to_string().contains("compile_error") {
        walk(out.clone(), &mut lines);
    }
    lines
}

/// One change to a list of tokens.
#[derive(Debug, Clone)]
enum Mangle {
    Delete(usize),
    Duplicate(usize),
    Swap(usize),
    Insert(usize, &'static str),
}

const FOREIGN: &[&str] = &[
    "@", ";", ",", "=", "=>", "for", "in", "policy", "spawn", "0", "()", "{}", "\"x\"",
];

fn mangle() -> impl proptest::strategy::Strategy<Value = Mangle> {
    use proptest::prelude::*;
    prop_oneof![
        any::<usize>().prop_map(Mangle::Delete),
        any::<usize>().prop_map(Mangle::Duplicate),
        any::<usize>().prop_map(Mangle::Swap),
        (any::<usize>(), proptest::sample::select(FOREIGN)).prop_map(|(i, t)| Mangle::Insert(i, t)),
    ]
}

fn apply(trees: &mut Vec<TokenTree>, change: &Mangle) {
    let len = trees.len();
    match *change {
        Mangle::Delete(i) if len > 0 => {
            trees.remove(i % len);
        }
        Mangle::Duplicate(i) if len > 0 => {
            let tt = trees[i % len].clone();
            trees.insert(i % len, tt);
        }
        Mangle::Swap(i) if len > 1 => trees.swap(i % (len - 1), i % (len - 1) + 1),
        Mangle::Insert(i, token) => {
            let new: TokenStream = token.parse().expect("valid tokens");
            trees.splice(i % (len + 1)..i % (len + 1), new);
        }
        _ => {}
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// Mangled calls, several changes at a time and inside groups too, never make the macro
    /// panic: it gives code, or errors whose spans lie in the input (or, for a mistake at the
    /// very end, the call itself).
    #[test]
    fn mangled_calls_give_code_or_errors_in_the_input(
        sample in 0..VALID.len(),
        changes in proptest::collection::vec(mangle(), 1..5),
        into_group in proptest::bool::ANY,
    ) {
        let source = format!("[::gather] {}", VALID[sample]);
        let lines = source.lines().count();
        let mut trees: Vec<TokenTree> =
            source.parse::<TokenStream>().expect("valid").into_iter().collect();
        // Leave the `[::gather]` group alone: the `macro_rules!` front always writes it.
        let mut user: Vec<TokenTree> = trees.split_off(1);
        for change in &changes {
            if into_group {
                // Mangle inside the first group of the call, where expressions live.
                if let Some(TokenTree::Group(group)) = user.iter_mut().find(|t| matches!(t, TokenTree::Group(_))) {
                    let mut inner: Vec<TokenTree> = group.stream().into_iter().collect();
                    apply(&mut inner, change);
                    let mut new = proc_macro2::Group::new(group.delimiter(), inner.into_iter().collect());
                    new.set_span(group.span());
                    *group = new;
                    continue;
                }
            }
            apply(&mut user, change);
        }
        trees.extend(user);
        let out = super::gather(trees.into_iter().collect());
        for line in error_lines(&out) {
            // Line 0 is the call site, where proc_macro2 outside a compiler puts a mistake
            // found at the end of the input.
            proptest::prop_assert!(line <= lines, "an error on line {} of a {}-line input: {}", line, lines, out);
        }
    }
}

/// Every token of `stream`, inside groups too.
fn count_tokens(stream: TokenStream) -> usize {
    stream
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(group) => 2 + count_tokens(group.stream()),
            _ => 1,
        })
        .sum()
}

/// The expansion grows linearly with the branch count, under every policy and option (tokio's
/// `join!` grows quadratically): the same number of tokens for every branch added, plus a few
/// for every tuple of 16 slots begun.
#[test]
fn expansion_grows_linearly_with_the_branch_count() {
    let size = |options: &str, n: usize| {
        let branches: Vec<String> = (0..n).map(|i| format!("fetch({i})")).collect();
        let out = expand(&format!("{options} {}", branches.join(", ")));
        assert!(!out.contains("compile_error"), "{out}");
        count_tokens(out.parse().expect("valid tokens"))
    };
    for options in [
        "",
        "policy = finish;",
        "policy = settle, timeout = d;",
        "policy = race, limit = 2;",
        "policy = race_ok, spawn;",
    ] {
        let (s3, s12, s16, s17, s48) = (
            size(options, 3),
            size(options, 12),
            size(options, 16),
            size(options, 17),
            size(options, 48),
        );
        let sizes = format!("{options}: {s3} {s12} {s16} {s17} {s48}");
        // From 3 to 16 branches the slots fit one tuple: only branches are added.
        assert_eq!((s12 - s3) % 9, 0, "{sizes}");
        let per_branch = (s12 - s3) / 9;
        assert_eq!(s16 - s12, 4 * per_branch, "{sizes}");
        // The 17th branch begins a second tuple; 48 branches make three.
        let per_tuple = s17 - s16 - per_branch;
        assert!(per_tuple < per_branch, "{sizes}");
        assert_eq!(s48 - s12, 36 * per_branch + 2 * per_tuple, "{sizes}");
    }
}
