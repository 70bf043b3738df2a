//! A branch's name: its source text, rebuilt from the spans of its tokens.

use proc_macro2::{TokenStream, TokenTree};

/// The source text of `tokens` as the user wrote it. Within a line the text is exact; a line
/// break and the indentation around it read as one space, so a name fits on one line. Where
/// the compiler cannot give the text (tokens made by another macro), the tokens are printed.
pub(crate) fn source_text(tokens: &[TokenTree]) -> String {
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
