//! A branch's name: its source text, rebuilt from the spans of its tokens.

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// The source text of `tokens` as the user wrote it. Within a line the text is exact; a line
/// break and the indentation around it read as one space, so a name fits on one line. Where
/// the compiler cannot give the text (tokens made by another macro), the tokens are printed.
pub(crate) fn source_text(tokens: &[TokenTree]) -> String {
    let mut flat = Vec::with_capacity(tokens.len());
    flatten_invisible_groups(tokens.iter().cloned(), &mut flat);
    let tokens = &flat[..];
    let mut out = String::new();
    let mut prev_end = None;
    for tt in tokens {
        let span = tt.span();
        let Some(text) = span.source_text() else {
            return tokens.iter().cloned().collect::<TokenStream>().to_string();
        };
        let start = span.start();
        if let Some(end) = prev_end {
            let proc_macro2::LineColumn { line, column } = end;
            if start.line != line {
                out.push(' ');
            } else if start.column > column {
                out.extend(std::iter::repeat_n(' ', start.column - column));
            }
        }
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if let Some(first) = lines.next() {
            out.push_str(first);
        }
        for line in lines {
            out.push(' ');
            out.push_str(line);
        }
        prev_end = Some(span.end());
    }
    out
}

/// A `$x:expr` of a user's `macro_rules!` reaches `gather!` as an invisible group whose span
/// is the `$x` in the macro's body; the text the user wrote is that of the tokens inside.
fn flatten_invisible_groups(tokens: impl Iterator<Item = TokenTree>, out: &mut Vec<TokenTree>) {
    for tt in tokens {
        match tt {
            TokenTree::Group(group) if group.delimiter() == Delimiter::None => {
                flatten_invisible_groups(group.stream().into_iter(), out);
            }
            tt => out.push(tt),
        }
    }
}
