//! The code a checked `gather!` becomes.
//!
//! Fixed form: each branch is pinned in the caller's frame as a `Slot`, and one `poll_fn`
//! polls the slots in branch order. Every branch contributes a fixed amount of code, so the
//! expansion grows linearly with the number of branches; the logic lives in the runtime.
//!
//! Dynamic form: a runtime `Engine` over the iterator and a closure made of the body, driven
//! by the policy's driver.
//!
//! Generated names use `Span::mixed_site()`, so they neither see nor shadow the caller's.
//! Calls that check a branch's type carry the branch's span, so that a type error is reported
//! under the branch.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Lifetime, LitStr};

use crate::ast::{Branch, Branches, Dynamic};
use crate::valid::{Gather, Policy};

/// The generated names, made once.
struct Names {
    krate: TokenStream,
    cx: Ident,
    record: Ident,
    names: Ident,
    deadline: Ident,
    driver: Ident,
    index: Ident,
    error: Ident,
    stopped: Ident,
    out: Ident,
    label: Lifetime,
}

pub(crate) fn expand(gather: Gather) -> TokenStream {
    let site = Span::mixed_site();
    let n = Names {
        krate: gather.krate.clone(),
        cx: Ident::new("__gather_cx", site),
        record: Ident::new("__gather_record", site),
        names: Ident::new("__gather_names", site),
        deadline: Ident::new("__gather_deadline", site),
        driver: Ident::new("__gather_driver", site),
        index: Ident::new("__gather_index", site),
        error: Ident::new("__gather_error", site),
        stopped: Ident::new("__gather_stopped", site),
        out: Ident::new("__gather_out", site),
        label: Lifetime::new("'__gather_pass", site),
    };
    let Names {
        krate: k,
        cx,
        deadline,
        ..
    } = &n;

    let limit = match &gather.limit {
        Some(expr) => quote_spanned!(expr.span()=> #k::__private::limit(#expr)),
        None => quote!(::core::primitive::usize::MAX),
    };
    let deadline_let = gather.timeout.as_ref().map(|expr| {
        let sleep = quote_spanned!(expr.span()=> #k::__private::deadline(#expr));
        quote!(let mut #deadline = ::core::pin::pin!(#sleep);)
    });
    let (setup, poll) = match &gather.branches {
        Branches::Fixed(branches) => fixed(&n, &gather, branches, &limit),
        Branches::Dynamic(dynamic) => self::dynamic(&n, &gather, dynamic, &limit),
    };
    quote! {
        {
            #deadline_let
            #setup
            ::core::future::poll_fn(|#cx: &mut ::core::task::Context<'_>| {
                #poll
            })
            .await
        }
    }
}

/// `Some(x)` where the `timeout` option makes each output optional, else `x`.
fn wrap_some(gather: &Gather, value: TokenStream) -> TokenStream {
    if gather.timeout.is_some() {
        quote!(::core::option::Option::Some(#value))
    } else {
        value
    }
}

/// The setup and the body of the `poll_fn` for the fixed form.
fn fixed(
    n: &Names,
    gather: &Gather,
    branches: &[Branch],
    limit: &TokenStream,
) -> (TokenStream, TokenStream) {
    let Names {
        krate: k,
        cx,
        record,
        names,
        deadline,
        index,
        error,
        stopped,
        out,
        label,
        ..
    } = n;
    let site = Span::mixed_site();
    let slots: Vec<Ident> = (0..branches.len())
        .map(|i| format_ident!("__gather_b{}", i, span = site))
        .collect();
    let indices: Vec<usize> = (0..branches.len()).collect();

    let slot_lets = branches.iter().zip(&slots).map(|(branch, slot)| {
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
    // `settle` and `race` have no error type; the others take it from their branches.
    let error_type = match gather.policy {
        Policy::Settle | Policy::Race => quote!(#k::__private::Infallible),
        Policy::Cancel | Policy::Finish | Policy::RaceOk => quote!(_),
    };
    let count = branches.len();
    let setup = quote! {
        #(#slot_lets)*
        let #names: &'static [&'static str] = &[ #(#name_lits),* ];
        let mut #record = #k::__private::Record::<#error_type>::new(#limit, #count);
    };

    // One poll of branch `i`, spanned at the branch so that a type error lands under it.
    let step = |method: &str, stops: bool| -> Vec<TokenStream> {
        branches
            .iter()
            .zip(&slots)
            .zip(&indices)
            .map(|((b, slot), i)| {
                let method = Ident::new(method, b.span);
                if stops {
                    quote_spanned! {b.span=>
                        if (#slot).#method(#cx, (#record).by_ref(), #i) {
                            break #label;
                        }
                    }
                } else {
                    quote_spanned! {b.span=>
                        (#slot).#method(#cx, (#record).by_ref(), #i);
                    }
                }
            })
            .collect()
    };
    let all_outputs = quote!(( #( #slots.take(), )* ));
    let stop_all = quote! {
        let mut #stopped = #k::__private::Vec::new();
        #( #slots.cancel(#indices, #names, &#record, &mut #stopped); )*
    };
    let drop_all = quote!( #( #slots.drop_future(); )* );
    // The winner's output; a branch whose output type differs fails to match the others here.
    let winner = {
        let arms = branches
            .iter()
            .zip(&slots)
            .zip(&indices)
            .map(|((b, slot), i)| quote_spanned!(b.span=> #i => (#slot).take(),));
        quote! {
            let #out = match #index {
                #(#arms)*
                _ => ::core::unreachable!(),
            };
        }
    };

    // Each policy gives: what to do after a pass (return early on a failure or a winner), and
    // the value once no branch is left running, in tail position.
    let (after_pass, done) = match gather.policy {
        Policy::Cancel => {
            let steps = step("poll_cancel", true);
            let after = quote! {
                #label: { #(#steps)* }
                if let ::core::option::Option::Some((#index, #error)) = #record.take_failure() {
                    #stop_all
                    return ::core::task::Poll::Ready(::core::result::Result::Err(
                        #k::__private::failed(#index, #names, #error, #stopped),
                    ));
                }
            };
            (after, quote!(::core::result::Result::Ok(#all_outputs)))
        }
        Policy::Finish => {
            let steps = step("poll_finish", false);
            let done = quote! {
                match #record.failures(#names) {
                    ::core::option::Option::Some(#error) => ::core::result::Result::Err(#error),
                    ::core::option::Option::None => ::core::result::Result::Ok(#all_outputs),
                }
            };
            (quote!(#(#steps)*), done)
        }
        Policy::Settle => {
            let steps = step("poll_settle", false);
            let done = if gather.timeout.is_some() {
                quote!(( #( ::core::option::Option::Some(#slots.take()), )* ))
            } else {
                quote!(( #( #slots.take(), )* ))
            };
            (quote!(#(#steps)*), done)
        }
        Policy::Race => {
            let steps = step("poll_race", true);
            let result = wrap_some(gather, quote!(#out));
            let after = quote! {
                #label: { #(#steps)* }
                if let ::core::option::Option::Some(#index) = #record.winner() {
                    #drop_all
                    #winner
                    return ::core::task::Poll::Ready(#result);
                }
            };
            // A fixed race has a branch, and the first to finish wins above.
            (
                after,
                quote!(::core::unreachable!(
                    "gather!: a race ended without a winner"
                )),
            )
        }
        Policy::RaceOk => {
            let steps = step("poll_race_ok", true);
            let after = quote! {
                #label: { #(#steps)* }
                if let ::core::option::Option::Some(#index) = #record.winner() {
                    #drop_all
                    #winner
                    return ::core::task::Poll::Ready(::core::result::Result::Ok(#out));
                }
            };
            (
                after,
                quote!(::core::result::Result::Err(#record.take_failures(#names))),
            )
        }
    };

    let on_deadline = gather.timeout.as_ref().map(|_| {
        let timed_out = match gather.policy {
            Policy::Cancel | Policy::Finish | Policy::RaceOk => quote! {
                #stop_all
                ::core::result::Result::Err(#k::__private::timed_out(#stopped))
            },
            Policy::Settle => quote! {
                #drop_all
                ( #( #slots.take_finished(), )* )
            },
            Policy::Race => quote! {
                #drop_all
                ::core::option::Option::None
            },
        };
        quote! {
            if ::core::future::Future::poll(#deadline.as_mut(), #cx).is_ready() {
                return ::core::task::Poll::Ready({ #timed_out });
            }
        }
    });

    // A fixed race has a branch, and the first to finish wins in `after_pass`: no branch left
    // running means no tail value to give.
    let tail = if gather.policy == Policy::Race {
        quote!(::core::unreachable!(
            "gather!: a race ended without a winner"
        ))
    } else {
        quote!(::core::task::Poll::Ready(#done))
    };
    let poll = quote! {
        #record.begin();
        #after_pass
        if #record.pending() {
            #on_deadline
            return ::core::task::Poll::Pending;
        }
        #tail
    };
    (setup, poll)
}

/// The setup and the body of the `poll_fn` for the dynamic form.
fn dynamic(
    n: &Names,
    gather: &Gather,
    dynamic: &Dynamic,
    limit: &TokenStream,
) -> (TokenStream, TokenStream) {
    let Names {
        krate: k,
        cx,
        deadline,
        driver,
        out,
        ..
    } = n;
    let Dynamic {
        pat,
        iter,
        body,
        name,
        ..
    } = dynamic;
    let span = body.span();
    let future = quote_spanned!(span=> ::core::future::IntoFuture::into_future(#body));
    let (kind, needs_result) = match gather.policy {
        Policy::Cancel => ("Cancel", true),
        Policy::Finish => ("Finish", true),
        Policy::Settle => ("Settle", false),
        Policy::Race => ("Race", false),
        Policy::RaceOk => ("RaceOk", true),
    };
    let kind = Ident::new(kind, Span::call_site());
    // Checked here, with the body as the argument, so that the error lands under the body.
    let future = if needs_result {
        quote_spanned!(span=> #k::__private::result_branch(#future))
    } else {
        future
    };
    let name = LitStr::new(name, span);
    let iter = quote_spanned!(iter.span()=> ::core::iter::IntoIterator::into_iter(#iter));
    // The closure is spanned at the body, so that rustc names it by the caller's file.
    let make = quote_spanned!(span=> |#pat| { #future });
    let setup = quote! {
        let mut #driver = #k::__private::#kind::new(#k::__private::Engine::new(
            #iter,
            #make,
            #limit,
            #name,
        ));
    };
    let poll_method = match (gather.policy, &gather.timeout) {
        (Policy::Settle, Some(_)) => quote!(poll_finished),
        _ => quote!(poll),
    };
    let result = match gather.policy {
        Policy::Race => wrap_some(gather, quote!(#out)),
        _ => quote!(#out),
    };
    let on_deadline = gather.timeout.as_ref().map(|_| {
        quote! {
            if ::core::future::Future::poll(#deadline.as_mut(), #cx).is_ready() {
                return ::core::task::Poll::Ready(#driver.timed_out());
            }
        }
    });
    let poll = quote! {
        if let ::core::task::Poll::Ready(#out) = #driver.#poll_method(#cx) {
            return ::core::task::Poll::Ready(#result);
        }
        #on_deadline
        ::core::task::Poll::Pending
    };
    (setup, poll)
}
