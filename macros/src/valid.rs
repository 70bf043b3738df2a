//! Checks on the parsed input: option names and values, labels. Every mistake found is
//! reported, each at its own tokens.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::{Expr, Ident, Lit};

use crate::ast::{Branches, Input, OPTION_NAMES, Opt, OptValue};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Policy {
    Cancel,
    Finish,
    Settle,
    Race,
    RaceOk,
}

impl Policy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Policy::Cancel => "cancel",
            Policy::Finish => "finish",
            Policy::Settle => "settle",
            Policy::Race => "race",
            Policy::RaceOk => "race_ok",
        }
    }
}

const POLICIES: [Policy; 5] = [
    Policy::Cancel,
    Policy::Finish,
    Policy::Settle,
    Policy::Race,
    Policy::RaceOk,
];

const POLICY_LIST: &str = "`cancel`, `finish`, `settle`, `race` or `race_ok`";

/// A `gather!` whose options are known and well formed.
pub(crate) struct Gather {
    pub krate: TokenStream,
    pub policy: Policy,
    pub timeout: Option<Expr>,
    pub limit: Option<Expr>,
    pub spawn: bool,
    pub branches: Branches,
}

/// Collects errors so that they are all reported together.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push_error(syn::Error::new(span, message));
    }

    fn push_spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push_error(syn::Error::new_spanned(tokens, message));
    }

    fn push_error(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

pub(crate) fn check(input: Input) -> syn::Result<Gather> {
    let mut errors = Errors::default();
    let mut policy = None;
    let mut timeout = None;
    let mut limit = None;
    let mut spawn = false;
    let mut seen: Vec<&Ident> = Vec::new();

    for Opt { key, value } in &input.options {
        let name = key.to_string();
        if !OPTION_NAMES.contains(&name.as_str()) {
            let hint = match nearest(&name, &OPTION_NAMES) {
                Some(near) => format!("did you mean `{near}`?"),
                None => "the options are `policy`, `timeout`, `limit` and `spawn`".to_owned(),
            };
            errors.push(key.span(), format!("unknown option `{name}`: {hint}"));
            continue;
        }
        if seen.contains(&key) {
            errors.push(
                key.span(),
                format!("`{name}` is given twice: give each option once"),
            );
            continue;
        }
        seen.push(key);
        match (name.as_str(), value) {
            ("spawn", OptValue::None) => spawn = true,
            ("spawn", OptValue::Missing(eq)) => {
                errors.push_spanned(eq, "`spawn` takes no value: write `spawn` alone");
            }
            ("spawn", OptValue::Expr(eq, expr)) => {
                errors.push_spanned(
                    quote::quote!(#eq #expr),
                    "`spawn` takes no value: write `spawn` alone",
                );
            }
            (_, OptValue::None | OptValue::Missing(_)) => {
                let example = match name.as_str() {
                    "policy" => format!("`policy = cancel`; the policies are {POLICY_LIST}"),
                    "timeout" => "`timeout = Duration::from_secs(5)`".to_owned(),
                    _ => "`limit = 8`".to_owned(),
                };
                errors.push(
                    key.span(),
                    format!("`{name}` needs a value, e.g. {example}"),
                );
            }
            ("policy", OptValue::Expr(_, expr)) => match check_policy(expr) {
                Ok(p) => policy = Some(p),
                Err(error) => errors.push_error(error),
            },
            ("limit", OptValue::Expr(_, expr)) => {
                if is_literal_zero(expr) {
                    errors.push_spanned(
                        expr,
                        "`limit` must be at least 1: with a limit of 0 no branch could start",
                    );
                }
                limit = Some((**expr).clone());
            }
            (_, OptValue::Expr(_, expr)) => timeout = Some((**expr).clone()),
        }
    }

    match &input.branches {
        Branches::Fixed(branches) => {
            let mut labels: Vec<&Ident> = Vec::new();
            for label in branches.iter().filter_map(|b| b.label.as_ref()) {
                if labels.contains(&label) {
                    errors.push(
                        label.span(),
                        format!("the label `{label}` names two branches: give each its own"),
                    );
                }
                labels.push(label);
            }
        }
        Branches::Dynamic(_) => {}
    }

    errors.finish()?;
    Ok(Gather {
        krate: input.krate,
        policy: policy.unwrap_or(Policy::Cancel),
        timeout,
        limit,
        spawn,
        branches: input.branches,
    })
}

fn check_policy(expr: &Expr) -> syn::Result<Policy> {
    let Expr::Path(path) = expr else {
        return Err(syn::Error::new_spanned(
            expr,
            format!("expected a policy: {POLICY_LIST}"),
        ));
    };
    let Some(ident) = path.path.get_ident().filter(|_| path.qself.is_none()) else {
        return Err(syn::Error::new_spanned(
            expr,
            format!("expected a policy: {POLICY_LIST}"),
        ));
    };
    let name = ident.to_string();
    if let Some(policy) = POLICIES.into_iter().find(|p| p.name() == name) {
        return Ok(policy);
    }
    let names = POLICIES.map(Policy::name);
    let hint = match nearest(&name, &names) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!("the policies are {POLICY_LIST}"),
    };
    Err(syn::Error::new(
        ident.span(),
        format!("unknown policy `{name}`: {hint}"),
    ))
}

fn is_literal_zero(expr: &Expr) -> bool {
    match expr {
        Expr::Lit(lit) => matches!(&lit.lit, Lit::Int(int) if int.base10_digits() == "0"),
        Expr::Group(group) => is_literal_zero(&group.expr),
        Expr::Paren(paren) => is_literal_zero(&paren.expr),
        _ => false,
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance where swapping two neighbouring letters counts as one edit.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![(0..=b.len()).collect::<Vec<_>>(); a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_suggest_the_nearest_name() {
        let policies = POLICIES.map(Policy::name);
        assert_eq!(nearest("cancle", &policies), Some("cancel"));
        assert_eq!(nearest("finsh", &policies), Some("finish"));
        assert_eq!(nearest("raceok", &policies), Some("race_ok"));
        assert_eq!(nearest("polcy", &OPTION_NAMES), Some("policy"));
        assert_eq!(nearest("banana", &policies), None);
    }

    #[test]
    fn distance_counts_a_swap_as_one_edit() {
        assert_eq!(distance("cancel", "cancel"), 0);
        assert_eq!(distance("cancle", "cancel"), 1);
        assert_eq!(distance("", "race"), 4);
        assert_eq!(distance("settle", "setle"), 1);
    }
}
