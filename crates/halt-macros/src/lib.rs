//! `#[guarded]`: every call of the function goes through an AgentHalt engine before its body
//! runs. Use it through the `agenthalt` facade (feature `macros`), whose paths the generated code
//! names.
//!
//! ```
//! use agenthalt::{guarded, Blocked, Engine};
//!
//! #[derive(Debug)]
//! enum MailError { Blocked(Blocked) }
//! impl From<Blocked> for MailError {
//!     fn from(b: Blocked) -> Self { MailError::Blocked(b) }
//! }
//!
//! static ENGINE: std::sync::LazyLock<Engine> = std::sync::LazyLock::new(Engine::new);
//!
//! #[guarded(engine = ENGINE, agent_id = "mailer")]
//! fn send_email(to: String, body: String) -> Result<(), MailError> {
//!     // runs only if the engine allows the call, with the arguments a guard may have changed
//!     Ok(())
//! }
//!
//! send_email("ops@example.com".into(), "weekly report".into()).unwrap();
//! ```

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, ImplItemFn, Lit, Meta, Pat, ReturnType, Token, Type};

/// Guards a function: its call (name, parameters serialised by name) is evaluated by the engine
/// before the body runs.
///
/// Options: `engine = <expr>` (required: anything that derefs to an `Engine`), `agent_id = <expr>`,
/// `session_id = <expr>` (a `&str` or `String` expression), `name = "<function name>"` (default:
/// the fn's name).
///
/// The fn returns `Result<T, E>` with `E: From<Blocked>`: a call that may not run returns
/// `Err(Blocked)` converted, and the body never runs. When a guard modifies the arguments, the
/// changed values are deserialised back into the parameters before the body runs (a parameter
/// passed by reference cannot be changed: such a call is refused). A call that needs approval
/// goes through the engine's approval handler.
#[proc_macro_attribute]
pub fn guarded(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Options {
    engine: Expr,
    agent_id: Option<Expr>,
    session_id: Option<Expr>,
    name: Option<String>,
}

fn options(attr: Tokens) -> syn::Result<Options> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    let (mut engine, mut agent_id, mut session_id, mut name) = (None, None, None, None);
    for meta in metas {
        let Meta::NameValue(nv) = meta else {
            return Err(syn::Error::new(meta.span(), "expected `option = value` (engine, agent_id, session_id, name)"));
        };
        let key = nv.path.get_ident().map(ToString::to_string).unwrap_or_default();
        match key.as_str() {
            "engine" => engine = Some(nv.value),
            "agent_id" => agent_id = Some(nv.value),
            "session_id" => session_id = Some(nv.value),
            "name" => match &nv.value {
                Expr::Lit(l) if matches!(&l.lit, Lit::Str(_)) => {
                    if let Lit::Str(s) = &l.lit {
                        name = Some(s.value());
                    }
                }
                other => return Err(syn::Error::new(other.span(), "`name` takes a string literal")),
            },
            _ => {
                return Err(syn::Error::new(
                    nv.path.span(),
                    format!("unknown option `{key}` of #[guarded]: expected engine, agent_id, session_id or name"),
                ));
            }
        }
    }
    let engine = engine.ok_or_else(|| {
        syn::Error::new(Span::call_site(), "#[guarded] needs `engine = <expr>`: the engine that evaluates each call")
    })?;
    Ok(Options { engine, agent_id, session_id, name })
}

fn expand(attr: Tokens, item: Tokens) -> syn::Result<Tokens> {
    let options = options(attr)?;
    // A free fn and a method parse alike as an `ImplItemFn` (a free fn has no receiver).
    let mut f: ImplItemFn = syn::parse2(item)?;
    let sig = &f.sig;
    let returns_result = match &sig.output {
        ReturnType::Type(_, ty) => match &**ty {
            Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
        ReturnType::Default => false,
    };
    if !returns_result {
        let span = match &sig.output {
            ReturnType::Type(_, ty) => ty.span(),
            ReturnType::Default => sig.ident.span(),
        };
        return Err(syn::Error::new(
            span,
            "#[guarded] fns return `Result<T, E>` with `E: From<agenthalt::Blocked>`: a call the engine blocks returns `Err`",
        ));
    }
    let name = options.name.clone().unwrap_or_else(|| sig.ident.to_string());
    let private = quote!(::agenthalt::__private);
    let mut insert = Vec::new();
    let mut write_back = Vec::new();
    for input in &sig.inputs {
        let FnArg::Typed(pt) = input else { continue };
        let Pat::Ident(pi) = &*pt.pat else {
            return Err(syn::Error::new(
                pt.pat.span(),
                "#[guarded] parameters must be plain names: the call's arguments are the parameters by name",
            ));
        };
        let ident = &pi.ident;
        let key = ident.to_string();
        let ty = &pt.ty;
        insert.push(quote_spanned! {ty.span()=>
            #private::insert_argument(&mut __halt_arguments, #key, &#ident, #name)?;
        });
        if matches!(&**ty, Type::Reference(_)) {
            write_back.push(quote! {
                #private::unchanged_reference(&__halt_outcome, &__halt_sent, #key, #name)?;
            });
        } else {
            write_back.push(quote_spanned! {ty.span()=>
                #[allow(unused_mut)]
                let mut #ident = #ident;
                #private::take_argument(&__halt_outcome, #key, &mut #ident, #name)?;
            });
        }
    }
    let engine = &options.engine;
    let agent = options.agent_id.as_ref().map(|a| quote!(__halt_context = __halt_context.with_agent(#a);));
    let session = options.session_id.as_ref().map(|s| quote!(__halt_context = __halt_context.with_session(#s);));
    let evaluate = if sig.asyncness.is_some() {
        quote!(__halt_engine.evaluate(__halt_context).await)
    } else {
        quote!(__halt_engine.evaluate_blocking(__halt_context))
    };
    let body = &f.block;
    let guarded_body: syn::Block = syn::parse2(quote! {{
        let __halt_outcome = {
            let __halt_engine: &#private::Engine = &#engine;
            let mut __halt_arguments = #private::JsonObject::new();
            #(#insert)*
            let __halt_sent = __halt_arguments.clone();
            let mut __halt_context = #private::context(#name, __halt_arguments);
            #agent
            #session
            (#evaluate, __halt_sent)
        };
        let (__halt_outcome, __halt_sent) = __halt_outcome;
        #private::allowed(&__halt_outcome)?;
        #(#write_back)*
        #body
    }})?;
    f.block = guarded_body;
    Ok(quote!(#f))
}
