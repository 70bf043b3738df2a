//! The procedural macro behind `gather!`. Depend on the `gather` crate instead: it re-exports
//! the macro and holds what the expanded code calls.
//!
//! The pipeline is `ast` (parse), `valid` (check), `expand` (generate code); this file only
//! turns their errors into `compile_error!`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod ast;
mod expand;
mod name;
mod valid;

use proc_macro::TokenStream;

/// Not public API: the `gather!` macro of the `gather` crate calls this with its `$crate` path
/// in brackets in front of the user's input.
#[doc(hidden)]
#[proc_macro]
pub fn gather_impl(input: TokenStream) -> TokenStream {
    gather(input.into()).into()
}

/// Parse, check, expand; every error becomes a `compile_error!` at the tokens at fault.
fn gather(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    syn::parse2::<ast::Input>(input)
        .and_then(valid::check)
        .map(expand::expand)
        .unwrap_or_else(|errors| {
            // Several `compile_error!`s in expression position need a block around them.
            let errors = errors.into_compile_error();
            quote::quote!({ #errors })
        })
}

#[cfg(test)]
mod tests;
