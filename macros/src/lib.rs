//! The procedural macro behind `gather!`. Depend on the `gather` crate instead: it re-exports
//! the macro and holds what the expanded code calls.
//!
//! The pipeline is `ast` (parse), `valid` (check), `expand` (generate code); this file only
//! turns their errors into `compile_error!`.

#![warn(missing_docs)]

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
    syn::parse2::<ast::Input>(input.into())
        .and_then(valid::check)
        .map(expand::expand)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
