//! The input of `gather!` as written: parsed, not yet checked.
//!
//! ```text
//! gather!( [OPTIONS ;] BRANCHES )
//! OPTIONS  := OPTION (, OPTION)*
//! OPTION   := IDENT [= EXPR]
//! BRANCHES := BRANCH (, BRANCH)* [,]  |  for PAT in EXPR => EXPR [,]
//! BRANCH   := [IDENT =] EXPR
//! ```
//! Which options exist and what their values may be is `valid`'s business, so that every
//! mistake in the options part is reported at once.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, Pat, Token, bracketed};

use crate::name::source_text;

/// The names that start an option. Without a `;` they cannot label the first branch.
pub(crate) const OPTION_NAMES: [&str; 4] = ["policy", "timeout", "limit", "spawn"];

const GRAMMAR: &str = "\
expected `gather!([OPTIONS;] BRANCHES)`, where OPTIONS are `policy = cancel | finish | settle | \
race | race_ok`, `timeout = DURATION`, `limit = N` and `spawn`, separated by `,`, and BRANCHES \
are futures separated by `,` (each may be labelled `name = future`), or `for PAT in ITER => FUTURE`";

pub(crate) struct Input {
    /// The path to the `gather` crate, as the `macro_rules!` front passed it.
    pub krate: TokenStream,
    pub options: Vec<Opt>,
    pub branches: Branches,
}

pub(crate) struct Opt {
    pub key: Ident,
    pub value: OptValue,
}

pub(crate) enum OptValue {
    /// `spawn`
    None,
    /// `policy =` with nothing after the `=`
    Missing(Token![=]),
    /// `limit = 4`
    Expr(Token![=], Box<Expr>),
}

pub(crate) enum Branches {
    Fixed(Vec<Branch>),
    Dynamic(Box<Dynamic>),
}

pub(crate) struct Branch {
    pub label: Option<Ident>,
    pub expr: Expr,
    /// The label, or else the expression's source text.
    pub name: String,
    /// The first token of the branch: where type errors about it are reported.
    pub span: Span,
}

pub(crate) struct Dynamic {
    pub pat: Pat,
    pub iter: Expr,
    pub body: Expr,
    /// The body's source text: every branch of the dynamic form has this name.
    pub name: String,
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let content;
        bracketed!(content in input);
        let krate: TokenStream = content.parse()?;

        let (options, semi) = if has_top_level_semi(input) {
            if input.peek(Token![;]) {
                let semi: Token![;] = input.parse()?;
                return Err(syn::Error::new(
                    semi.span,
                    "expected options before this `;`, e.g. `policy = finish;`, or no `;` at all",
                ));
            }
            parse_options(input)?
        } else if starts_with_option(input) {
            return Err(missing_semi(input));
        } else {
            (Vec::new(), None)
        };

        let branches = if input.is_empty() {
            let span = semi.map_or_else(Span::call_site, |s| s.span);
            return Err(syn::Error::new(
                span,
                "`gather!` needs at least one branch: a future to run, e.g. `gather!(fetch(1), fetch(2))`",
            ));
        } else if input.peek(Token![for]) {
            Branches::Dynamic(Box::new(input.parse()?))
        } else {
            Branches::Fixed(parse_branches(input)?)
        };
        Ok(Input {
            krate,
            options,
            branches,
        })
    }
}

/// Whether a `;` stands outside every group: only the one ending the options may.
fn has_top_level_semi(input: ParseStream<'_>) -> bool {
    let mut cursor = input.cursor();
    while let Some((tt, next)) = cursor.token_tree() {
        if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ';') {
            return true;
        }
        cursor = next;
    }
    false
}

/// `policy = ..`, `timeout = ..`, `limit = ..`, or a bare `spawn`, at the start of `input`.
fn starts_with_option(input: ParseStream<'_>) -> bool {
    let fork = input.fork();
    let Ok(key) = fork.call(Ident::parse_any) else {
        return false;
    };
    if !OPTION_NAMES.iter().any(|name| key == name) {
        return false;
    }
    is_single_eq(&fork) || (key == "spawn" && (fork.is_empty() || fork.peek(Token![,])))
}

/// A lone `=`, not the start of `==` or `=>`.
fn is_single_eq(input: ParseStream<'_>) -> bool {
    input.peek(Token![=]) && !input.peek(Token![==]) && !input.peek(Token![=>])
}

/// Options written without the `;` that ends them: find where it belongs and ask for it.
fn missing_semi(input: ParseStream<'_>) -> syn::Error {
    loop {
        let last = match parse_option(input) {
            Ok(opt) => opt.key.span(),
            Err(err) => return err,
        };
        if input.peek(Token![,]) {
            let fork = input.fork();
            let comma: Token![,] = fork.parse().expect("peeked");
            if starts_with_option(&fork) {
                input.parse::<Token![,]>().expect("peeked");
                continue;
            }
            return syn::Error::new(
                comma.span,
                "expected `;` here, to end the options before the branches, as in \
                 `gather!(policy = cancel; a, b)`; `policy`, `timeout`, `limit` and `spawn` \
                 cannot label the first branch",
            );
        }
        let span = if input.is_empty() { last } else { input.span() };
        return syn::Error::new(
            span,
            "expected `;` and then the branches after the options, as in \
             `gather!(policy = cancel; a, b)`",
        );
    }
}

fn parse_options(input: ParseStream<'_>) -> syn::Result<(Vec<Opt>, Option<Token![;]>)> {
    let mut options = Vec::new();
    loop {
        options.push(parse_option(input)?);
        if input.peek(Token![;]) {
            return Ok((options, Some(input.parse()?)));
        }
        if !input.peek(Token![,]) {
            return Err(
                input.error("expected `,` before the next option, or `;` to end the options")
            );
        }
        input.parse::<Token![,]>()?;
    }
}

fn parse_option(input: ParseStream<'_>) -> syn::Result<Opt> {
    if !input.peek(Ident::peek_any) {
        return Err(input
            .error("expected an option: `policy = ..`, `timeout = ..`, `limit = ..` or `spawn`"));
    }
    let key = input.call(Ident::parse_any)?;
    let value = if is_single_eq(input) {
        let eq: Token![=] = input.parse()?;
        if input.is_empty() || input.peek(Token![,]) || input.peek(Token![;]) {
            OptValue::Missing(eq)
        } else {
            OptValue::Expr(eq, Box::new(input.parse()?))
        }
    } else {
        OptValue::None
    };
    Ok(Opt { key, value })
}

fn parse_branches(input: ParseStream<'_>) -> syn::Result<Vec<Branch>> {
    let mut branches = Vec::new();
    while !input.is_empty() {
        branches.push(input.parse()?);
        if input.is_empty() {
            break;
        }
        if input.peek(Token![;]) {
            return Err(input
                .error("unexpected `;`: only one `;` may stand in `gather!`, after the options"));
        }
        if !input.peek(Token![,]) {
            return Err(input.error("expected `,` between branches"));
        }
        input.parse::<Token![,]>()?;
    }
    Ok(branches)
}

/// Parses an expression and keeps the tokens it was written with, for its name.
fn parse_expr_with_text(input: ParseStream<'_>) -> syn::Result<(Expr, String)> {
    let begin = input.cursor();
    let expr: Expr = input.parse()?;
    let end = input.cursor();
    let mut tokens = Vec::new();
    let mut cursor = begin;
    while cursor != end {
        let Some((tt, next)) = cursor.token_tree() else {
            break;
        };
        tokens.push(tt);
        cursor = next;
    }
    Ok((expr, source_text(&tokens)))
}

impl Parse for Branch {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let span = input.span();
        let fork = input.fork();
        let label = if fork.parse::<Ident>().is_ok() && is_single_eq(&fork) {
            let label: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            if input.is_empty() || input.peek(Token![,]) {
                return Err(syn::Error::new(
                    label.span(),
                    format!("expected a future after the label `{label} =`"),
                ));
            }
            Some(label)
        } else {
            None
        };
        if input.peek(Token![,]) {
            return Err(input.error(format!(
                "expected a branch (a future) before this `,`; {GRAMMAR}"
            )));
        }
        let (expr, text) = parse_expr_with_text(input)?;
        let name = label.as_ref().map_or(text, Ident::to_string);
        Ok(Branch {
            label,
            expr,
            name,
            span,
        })
    }
}

impl Parse for Dynamic {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        input.parse::<Token![for]>()?;
        let pat = Pat::parse_single(input)?;
        input.parse::<Token![in]>()?;
        let iter = Expr::parse_without_eager_brace(input)?;
        if !input.peek(Token![=>]) {
            return Err(input.error(
                "expected `=>` and the future to run for each item: `for x in xs => fetch(x)`",
            ));
        }
        input.parse::<Token![=>]>()?;
        let (body, name) = parse_expr_with_text(input)?;
        if input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
        }
        if !input.is_empty() {
            return Err(input.error(
                "the dynamic form `for PAT in ITER => FUTURE` is the only branch of its `gather!`",
            ));
        }
        Ok(Dynamic {
            pat,
            iter,
            body,
            name,
        })
    }
}
