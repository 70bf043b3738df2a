//! The code a checked `gather!` becomes.
//!
//! Fixed form: each branch is pinned in the caller's frame in a `Slot`, and one `poll_fn`
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

/// How many slots a tuple of the fixed form holds (see `fixed`).
const CHUNK: usize = 16;

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
    reaper: Ident,
    scope: Ident,
    ending: Ident,
    label: Lifetime,
    run: Lifetime,
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
        reaper: Ident::new("__gather_reaper", site),
        scope: Ident::new("__gather_scope", site),
        ending: Ident::new("__gather_ending", site),
        label: Lifetime::new("'__gather_pass", site),
        run: Lifetime::new("'__gather_run", site),
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
    // The fixed form's poll takes the references it needs by value, one per kind of state
    // (see `fixed`); the dynamic form's borrows its driver.
    let (setup, poll, capture) = match &gather.branches {
        Branches::Fixed(branches) => {
            let (setup, poll) = fixed(&n, &gather, branches, &limit);
            (setup, poll, quote!(move))
        }
        Branches::Dynamic(dynamic) => {
            let (setup, poll) = self::dynamic(&n, &gather, dynamic, &limit);
            (setup, poll, quote!())
        }
    };
    quote! {
        {
            // Anonymous imports: they only let the autoref calls on the runtime's `Adopt`
            // resolve, and name nothing in the caller's code.
            #[allow(unused_imports)]
            use #k::__private::{
                AdoptAny as _, AdoptJoinHandle as _, ProbeAny as _, ProbeGuarded as _, SpawnAdopted as _,
                SpawnNeedsSendAndStatic as _,
            };
            #deadline_let
            #setup
            ::core::future::poll_fn(#capture |#cx: &mut ::core::task::Context<'_>| {
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

/// A branch's future. A tokio `JoinHandle` is recognised by its type at the call site (by
/// autoref: `Adopt` picks `AdoptJoinHandle` over `AdoptAny`) and adopted, so that its task is
/// aborted and awaited if the gather cancels it. Under `spawn`, every other branch is spawned
/// on a task of its own. Every token but the runtime's path carries the branch's span, so that
/// a branch that is not a future is reported under it.
fn branch_future(
    n: &Names,
    gather: &Gather,
    expr: &syn::Expr,
    span: Span,
    index: &TokenStream,
) -> TokenStream {
    let k = &n.krate;
    let adopted = quote_spanned! {span=>
        ::core::future::IntoFuture::into_future((&#k::__private::Adopt::new(#expr)).adopt())
    };
    if gather.spawn {
        quote_spanned!(span=> (&#k::__private::Adopt::new(#adopted)).spawn_or_drop_spawn_to_run_in_place(#index))
    } else {
        adopted
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
        reaper,
        scope,
        ending,
        index,
        error,
        stopped,
        out,
        label,
        run,
        ..
    } = n;
    let site = Span::mixed_site();
    // The slots are in tuples of up to `CHUNK`, each pinned as a whole, which the poll
    // reaches through one pinned reference each: a closure that captured each slot on its own
    // would store and load a pointer per branch, and so would a slot that pointed at its
    // future pinned on its own. A slot is reached by the runtime's projection of its tuple
    // (`Fields`), which keeps it pinned. Not one tuple of all: rustc takes time quadratic in a
    // tuple's length to check the code that borrows its fields.
    let chunks: Vec<Ident> = (0..branches.len().div_ceil(CHUNK))
        .map(|c| format_ident!("__gather_slots{}", c, span = site))
        .collect();
    let slots: Vec<TokenStream> = (0..branches.len())
        .map(|i| {
            let chunk = &chunks[i / CHUNK];
            let field = syn::Index {
                index: (i % CHUNK) as u32,
                span: site,
            };
            quote!(#k::__private::Fields::fields(#chunk.as_mut()).#field)
        })
        .collect();
    let indices: Vec<usize> = (0..branches.len()).collect();
    // The branch count, which chooses how the runtime compiles a branch's poll.
    let count = proc_macro2::Literal::usize_unsuffixed(branches.len());
    // Whether branches may wait for their turn, which the runtime checks only then.
    let limited = gather.limit.is_some();

    // `settle` keeps a branch's stage and output under one tag, the other policies apart
    // (see the runtime's `Keep`).
    let slot_type = match gather.policy {
        Policy::Settle => Ident::new("SettleSlot", Span::call_site()),
        _ => Ident::new("Slot", Span::call_site()),
    };
    let slot_inits: Vec<TokenStream> = branches
        .iter()
        .zip(&indices)
        .map(|(branch, i)| {
            let future = branch_future(n, gather, &branch.expr, branch.span, &quote!(#i));
            quote! {
                #k::__private::#slot_type::<_, _, #count, #limited>::new(#future),
            }
        })
        .collect();
    let chunk_lets = chunks
        .iter()
        .zip(slot_inits.chunks(CHUNK))
        .map(|(chunk, inits)| quote!(let mut #chunk = ::core::pin::pin!(( #(#inits)* ));));
    let name_lits: Vec<LitStr> = branches
        .iter()
        .map(|b| LitStr::new(&b.name, b.span))
        .collect();
    // `settle` and `race` have no error type; the others take it from their branches.
    let error_type = match gather.policy {
        Policy::Settle | Policy::Race => quote!(#k::__private::Infallible),
        Policy::Cancel | Policy::Finish | Policy::RaceOk => quote!(_),
    };
    let policy_name = gather.policy.name();
    let setup = quote! {
        #(#chunk_lets)*
        // An array, not a slice: its length is known, so naming a branch needs no bounds check.
        let #names: &'static [&'static str; #count] = &[ #(#name_lits),* ];
        let mut #record = #k::__private::Record::<#error_type>::new(#limit, #names, #policy_name);
        // Made only when the gather ends early with tasks to await or a panic to resume: a
        // gather that ends with every branch's outcome, or whose cancelled branches owned no
        // task, never builds or drops one.
        let mut #reaper: ::core::option::Option<#k::__private::Reaper> = ::core::option::Option::None;
        let mut #ending = ::core::option::Option::None;
        // What the poll reaches, as references it takes by value (each tuple of slots is one
        // already).
        let #record = &mut #record;
        let #reaper = &mut #reaper;
        let #ending = &mut #ending;
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
    // Code that runs once per gather, after the passes (taking the outputs, cancelling the
    // branches), reaches the slots through references the optimizer cannot see through: else
    // it keeps the address of every slot from the pass, with one store to the stack per branch
    // in every pass, to reuse it here.
    let reload = quote!(#( let mut #chunks = ::core::hint::black_box(#chunks.as_mut()); )*);
    let all_outputs = quote!(( #( #slots.take(), )* ));
    // Whether each branch guards a task, known from its type: a constant, so that the check
    // costs nothing when its branch is dropped.
    let guarded: Vec<TokenStream> = slots
        .iter()
        .map(|slot| quote!((&#k::__private::Probe::of(&#slot)).guarded()))
        .collect();
    // A slot is reached through its tuple, borrowed for the call: whether it is a guard is
    // told before the call that drops it.
    let guard = Ident::new("__gather_guarded", site);
    // Cancels every branch still running, naming those that had started, inside a reaping
    // scope: the tasks of adopted and spawned branches are awaited before the gather returns.
    let stop_all = quote! {
        let #scope = #k::__private::Scope::open();
        let mut #stopped = #record.stopped();
        #(
            let #guard = #guarded;
            #slots.cancel(#indices, #guard, &#name_lits, &#record, &mut #stopped);
        )*
        #scope.close_into(#reaper);
    };
    let drop_all = quote! {
        let #scope = #k::__private::Scope::open();
        #(
            let #guard = #guarded;
            #slots.drop_future(#indices, #guard, &#record);
        )*
        #scope.close_into(#reaper);
    };
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
    // Ends the gather with `value`: at once when the reaping scope held nothing (no task to
    // await, no panic to resume), else once every aborted task is gone.
    let end_with = |value: TokenStream| {
        quote! {
            let #out = #value;
            if #reaper.is_none() {
                return ::core::task::Poll::Ready(#out);
            }
            *#ending = ::core::option::Option::Some(#out);
            break #run;
        }
    };

    // Each policy gives: what to do after a pass (end early on a failure or a winner), and
    // the value once no branch is left running, in tail position.
    let (pass, after_pass, done) = match gather.policy {
        Policy::Cancel => {
            let steps = step("poll_cancel", true);
            let end = end_with(quote! {
                ::core::result::Result::Err(#k::__private::failed(#index, #names, #error, #stopped))
            });
            let after = quote! {
                if let ::core::option::Option::Some((#index, #error)) = #record.take_failure() {
                    #stop_all
                    #end
                }
            };
            let done = quote!(::core::result::Result::Ok(#all_outputs));
            (quote!(#label: { #(#steps)* }), after, done)
        }
        Policy::Finish => {
            let steps = step("poll_finish", false);
            let done = quote! {
                match #record.failures(#names) {
                    ::core::option::Option::Some(#error) => ::core::result::Result::Err(#error),
                    ::core::option::Option::None => ::core::result::Result::Ok(#all_outputs),
                }
            };
            (quote!(#(#steps)*), quote!(), done)
        }
        Policy::Settle => {
            let steps = step("poll_settle", false);
            let done = if gather.timeout.is_some() {
                quote!(( #( ::core::option::Option::Some(#slots.take()), )* ))
            } else {
                quote!(( #( #slots.take(), )* ))
            };
            (quote!(#(#steps)*), quote!(), done)
        }
        Policy::Race => {
            let steps = step("poll_race", true);
            let end = end_with(wrap_some(gather, quote!(#out)));
            let after = quote! {
                if let ::core::option::Option::Some(#index) = #record.winner() {
                    #drop_all
                    #winner
                    #end
                }
            };
            (quote!(#label: { #(#steps)* }), after, quote!())
        }
        Policy::RaceOk => {
            let steps = step("poll_race_ok", true);
            let end = end_with(quote!(::core::result::Result::Ok(#out)));
            let after = quote! {
                if let ::core::option::Option::Some(#index) = #record.winner() {
                    #drop_all
                    #winner
                    #end
                }
            };
            let done = quote!(::core::result::Result::Err(#record.take_failures(#names)));
            (quote!(#label: { #(#steps)* }), after, done)
        }
    };

    // Under `spawn`, a task that panicked or was cancelled from outside ends the gather with a
    // panic, once the other tasks are aborted and gone.
    let on_trouble = gather.spawn.then(|| {
        quote! {
            if let ::core::option::Option::Some((#index, #error)) = #k::__private::take_trouble() {
                #record.troubled(#index);
                #drop_all
                #reaper.get_or_insert_default().trouble(#index, #names[#index], #error);
                break #run;
            }
        }
    });

    let on_deadline = gather.timeout.as_ref().map(|_| {
        let end = match gather.policy {
            Policy::Cancel | Policy::Finish | Policy::RaceOk => {
                let end = end_with(
                    quote!(::core::result::Result::Err(#k::__private::timed_out(#stopped))),
                );
                quote!(#stop_all #end)
            }
            Policy::Settle => {
                let end = end_with(quote!(( #( #slots.take_finished(), )* )));
                quote!(#drop_all #end)
            }
            Policy::Race => {
                let end = end_with(quote!(::core::option::Option::None));
                quote!(#drop_all #end)
            }
        };
        quote! {
            if ::core::future::Future::poll(#deadline.as_mut(), #cx).is_ready() {
                #record.timed_out();
                #end
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
        // An output of type `!` (a branch that only panics) is a value like any other here.
        quote! {
            #reload
            #[allow(clippy::diverging_sub_expression)]
            let #out = #done;
            return ::core::task::Poll::Ready(#out);
        }
    };
    // Errors name the branches cancelled; a task that finished before its abort was not.
    let keep_finished = matches!(
        gather.policy,
        Policy::Cancel | Policy::Finish | Policy::RaceOk
    )
    .then(|| quote!(#reaper.keep_finished(&mut #out);));
    let poll = quote! {
        #run: {
            // A reaper is made only by ending early with tasks to await or a panic to resume.
            if #reaper.is_some() {
                break #run;
            }
            #record.begin(#cx);
            #pass
            // A task's panic outranks any outcome seen in the same pass.
            #on_trouble
            #after_pass
            if #record.pending() {
                #on_deadline
                return ::core::task::Poll::Pending;
            }
            #tail
        }
        // Ending early: every branch has been dropped; wait until their tasks are gone.
        let ::core::option::Option::Some(#reaper) = #reaper.as_mut() else {
            ::core::unreachable!("gather!: ended early without a reaper");
        };
        if #reaper.poll_reaped(#cx).is_pending() {
            return ::core::task::Poll::Pending;
        }
        #reaper.resume_panic();
        let ::core::option::Option::Some(mut #out) = #ending.take() else {
            ::core::unreachable!("gather!: ended without an outcome");
        };
        #keep_finished
        ::core::task::Poll::Ready(#out)
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
        index,
        ..
    } = n;
    let Dynamic {
        pat,
        iter,
        body,
        name,
    } = dynamic;
    let span = body.span();
    let timed = gather.timeout.is_some();
    let (policy, needs_result) = match gather.policy {
        Policy::Cancel => (quote!(Cancel<_>), true),
        Policy::Finish => (quote!(Finish<_, _>), true),
        Policy::Settle => (quote!(Settle<_, #timed>), false),
        Policy::Race => (quote!(Race<#timed>), false),
        Policy::RaceOk => (quote!(RaceOk<_>), true),
    };
    let future = branch_future(n, gather, body, span, &quote!(#index));
    // Checked here, with the body as the argument, so that the error lands under the body.
    let future = if needs_result {
        quote_spanned!(span=> #k::__private::result_branch(#future))
    } else {
        future
    };
    let name = LitStr::new(name, span);
    let iter = quote_spanned!(iter.span()=> ::core::iter::IntoIterator::into_iter(#iter));
    // The closure is spanned at the body, so that rustc names it by the caller's file.
    let make = quote_spanned!(span=> |#index: usize, #pat| { #future });
    let spawn = gather.spawn;
    let policy_name = gather.policy.name();
    // Where each branch starts, pinned in the caller's frame: a branch ready at its first
    // poll needs no slot of the engine's.
    let stage = Ident::new("__gather_stage", Span::mixed_site());
    let setup = quote! {
        let #stage = ::core::pin::pin!(::core::option::Option::None);
        let mut #driver = #k::__private::Driver::<_, _, _, #k::__private::#policy, _>::new(
            #iter, #make, #limit, &#name, #spawn, #policy_name, #stage,
        );
    };
    let on_deadline = gather.timeout.as_ref().map(|_| {
        quote! {
            if !#driver.is_ending() && ::core::future::Future::poll(#deadline.as_mut(), #cx).is_ready() {
                #driver.time_out();
                if let ::core::task::Poll::Ready(#out) = #driver.poll(#cx) {
                    return ::core::task::Poll::Ready(#out);
                }
            }
        }
    });
    let poll = quote! {
        if let ::core::task::Poll::Ready(#out) = #driver.poll(#cx) {
            return ::core::task::Poll::Ready(#out);
        }
        #on_deadline
        ::core::task::Poll::Pending
    };
    (setup, poll)
}
