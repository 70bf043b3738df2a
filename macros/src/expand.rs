//! The code a checked `gather!` becomes.
//!
//! Each branch is pinned in the caller's frame as a `Slot`, then one `poll_fn` polls the
//! slots in branch order. Every branch contributes a fixed amount of code, so the expansion
//! grows linearly with the number of branches; the logic lives in the runtime's `Slot`.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{Lifetime, LitStr};

use crate::ast::{Branch, Branches};
use crate::valid::{Gather, Policy};

pub(crate) fn expand(gather: Gather) -> TokenStream {
    match &gather.branches {
        Branches::Fixed(branches) => fixed(&gather, branches),
        // `valid` reports the dynamic form as not available yet.
        Branches::Dynamic(_) => TokenStream::new(),
    }
}

/// Names that the caller's code cannot see or shadow.
struct Names {
    cx: Ident,
    pass: Ident,
    names: Ident,
    label: Lifetime,
    slots: Vec<Ident>,
}

fn fixed(gather: &Gather, branches: &[Branch]) -> TokenStream {
    let k = &gather.krate;
    let site = Span::mixed_site();
    let n = Names {
        cx: Ident::new("__gather_cx", site),
        pass: Ident::new("__gather_pass", site),
        names: Ident::new("__gather_names", site),
        label: Lifetime::new("'__gather_pass", site),
        slots: (0..branches.len())
            .map(|i| format_ident!("__gather_b{}", i, span = site))
            .collect(),
    };
    let Names {
        cx,
        pass,
        names,
        label,
        slots,
    } = &n;

    let slot_lets = branches.iter().zip(slots).map(|(branch, slot)| {
        let expr = &branch.expr;
        let future = quote_spanned!(branch.span=> ::core::future::IntoFuture::into_future(#expr));
        quote! {
            let mut #slot = #k::__private::Slot {
                fut: ::core::pin::pin!(::core::option::Option::Some(#future)),
                out: ::core::option::Option::None,
            };
        }
    });
    let name_lits = branches.iter().map(|b| LitStr::new(&b.name, b.span));
    let indices = 0..branches.len();

    let body = match gather.policy {
        Policy::Cancel => {
            let index = Ident::new("__gather_index", site);
            let error = Ident::new("__gather_error", site);
            let cancelled = Ident::new("__gather_cancelled", site);
            let steps = branches
                .iter()
                .zip(slots)
                .zip(indices.clone())
                .map(|((b, slot), i)| {
                    quote_spanned! {b.span=>
                        if (#slot).poll_cancel(#cx, (#pass).by_ref(), #i) {
                            break #label;
                        }
                    }
                });
            quote! {
                #label: {
                    #(#steps)*
                }
                if let ::core::option::Option::Some((#index, #error)) = #pass.take_failure() {
                    let mut #cancelled = #k::__private::Vec::new();
                    #( #slots.cancel(#indices, #names, &mut #cancelled); )*
                    return ::core::task::Poll::Ready(::core::result::Result::Err(
                        #k::__private::failed(#index, #names, #error, #cancelled),
                    ));
                }
                if #pass.pending() {
                    return ::core::task::Poll::Pending;
                }
                ::core::task::Poll::Ready(::core::result::Result::Ok(( #( #slots.take(), )* )))
            }
        }
        Policy::Finish => {
            let steps = branches
                .iter()
                .zip(slots)
                .zip(indices)
                .map(|((b, slot), i)| {
                    quote_spanned! {b.span=>
                        (#slot).poll_finish(#cx, (#pass).by_ref(), #i);
                    }
                });
            quote! {
                #(#steps)*
                if #pass.pending() {
                    return ::core::task::Poll::Pending;
                }
                if let ::core::option::Option::Some(error) = #pass.take_failures(#names) {
                    return ::core::task::Poll::Ready(::core::result::Result::Err(error));
                }
                ::core::task::Poll::Ready(::core::result::Result::Ok(( #( #slots.take(), )* )))
            }
        }
        Policy::Settle => {
            let steps = branches.iter().zip(slots).map(|(b, slot)| {
                let pass = at(pass, b);
                quote_spanned! {b.span=>
                    (#slot).poll_settle(#cx, &mut #pass);
                }
            });
            quote! {
                #(#steps)*
                if #pass.pending() {
                    return ::core::task::Poll::Pending;
                }
                ::core::task::Poll::Ready(( #( #slots.take(), )* ))
            }
        }
        // `valid` reports these policies as not available yet.
        Policy::Race | Policy::RaceOk => return TokenStream::new(),
    };

    quote! {
        {
            #(#slot_lets)*
            let #names: &'static [&'static str] = &[ #(#name_lits),* ];
            let mut #pass = #k::__private::BranchErrors::new();
            ::core::future::poll_fn(|#cx: &mut ::core::task::Context<'_>| {
                #pass.begin();
                #body
            })
            .await
        }
    }
}

/// `ident`, resolved as before but reported at `branch`: a type error in an argument made of
/// it then lands under the branch rather than on the whole `gather!` call.
fn at(ident: &Ident, branch: &Branch) -> Ident {
    Ident::new(&ident.to_string(), ident.span().located_at(branch.span))
}
