//! `registry! { /// docs \n pub Jobs<App> { JobA, JobB } }`: the application's list of jobs.
//!
//! Generates the registry type (implementing `Registry`), a `Registered<Jobs>` impl per job (so
//! the typed client refuses unlisted jobs), the name enum `JobsName` (`as_str`, `kind`, `ALL`,
//! `FromStr`, `Display`), `Jobs::builder()`, and a check per pair of jobs that their persisted
//! names differ (`checks::DistinctNames`, an error naming both jobs).
//!
//! Every use of a listed job is spanned on its path in the list and goes through
//! `checks::RegisterJob`, whose supertrait is `Job`: a listed type that is no job of the
//! registry's app type is one error there, which rustc does not repeat for `Job`.

use std::collections::HashMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Ident, Token, Type, Visibility};

use crate::errors::Errors;

struct RegistryInput {
    attrs: Vec<Attribute>,
    vis: Visibility,
    ident: Ident,
    app: Option<Type>,
    /// The braces around the list.
    braces: proc_macro2::Span,
    jobs: Vec<syn::Path>,
}

impl Parse for RegistryInput {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        if input.peek(Token![struct]) {
            let token: Token![struct] = input.parse()?;
            return Err(syn::Error::new(
                token.span,
                "write the registry without `struct`, e.g. `registry! { pub Jobs<App> { MyJob } }`",
            ));
        }
        let ident: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected the registry's name, e.g. `registry! { pub Jobs<App> { MyJob } }`",
            )
        })?;
        let app = if input.peek(Token![<]) {
            input.parse::<Token![<]>()?;
            let app: Type = input.parse()?;
            input.parse::<Token![>]>()?;
            Some(app)
        } else {
            None
        };
        let content;
        let braces = syn::braced!(content in input).span.join();
        let jobs = Punctuated::<syn::Path, Token![,]>::parse_terminated(&content)?;
        if !input.is_empty() {
            return Err(input.error(
                "unexpected tokens after the list of jobs; one `registry!` defines one registry",
            ));
        }
        Ok(RegistryInput {
            attrs,
            vis,
            ident,
            app,
            braces,
            jobs: jobs.into_iter().collect(),
        })
    }
}

pub(crate) fn expand(tokens: TokenStream) -> TokenStream {
    match syn::parse2::<RegistryInput>(tokens) {
        Ok(input) => generate(input),
        Err(e) => e.to_compile_error(),
    }
}

fn generate(input: RegistryInput) -> TokenStream {
    let RegistryInput {
        attrs,
        vis,
        ident,
        app,
        braces,
        jobs,
    } = input;
    let app = app.map_or_else(|| quote!(()), |a| a.to_token_stream());
    let mut errors = Errors::default();

    // One entry per distinct job; a job listed twice, or two jobs with one type name, is an error.
    let mut by_path: HashMap<String, ()> = HashMap::new();
    let mut by_variant: HashMap<String, String> = HashMap::new();
    let mut entries: Vec<(syn::Path, Ident)> = Vec::new();
    if jobs.is_empty() {
        errors.push(syn::Error::new(
            braces,
            format!("`{ident}` lists no job; list the job types between the braces, e.g. `{ident} {{ TokenRefresher, WebhookBatcher }}`"),
        ));
    }
    for path in jobs {
        let key = path.to_token_stream().to_string().replace(' ', "");
        let Some(last) = path.segments.last() else {
            continue;
        };
        if let Some(generic) = path.segments.iter().find(|s| !s.arguments.is_none()) {
            errors.at(
                &generic.arguments,
                format!("list `{}` without type arguments: a job type is not generic, since each job has one persisted name", generic.ident),
            );
            continue;
        }
        let variant = last.ident.unraw();
        if by_path.insert(key.clone(), ()).is_some() {
            errors.at(
                &path,
                format!("`{key}` is listed twice in `{ident}`; remove one"),
            );
            continue;
        }
        if let Some(first) = by_variant.insert(variant.to_string(), key.clone()) {
            errors.at(
                &path,
                format!("`{first}` and `{key}` have the same type name `{variant}`, which `{ident}Name` needs once; rename one of the types"),
            );
            continue;
        }
        let variant = Ident::new(&variant.to_string(), last.ident.span());
        entries.push((path, variant));
    }

    let docs_given = attrs.iter().any(|a| a.path().is_ident("doc"));
    let default_doc = (!docs_given).then(|| {
        let doc = format!(
            "The jobs of this application, as listed in `registry!`: {}.",
            list(&entries)
        );
        quote!(#[doc = #doc])
    });
    let name_enum = format_ident!("{}Name", ident);
    let enum_doc = format!("The persisted name of each job in [`{ident}`], for storage and for callers that have a name as a string.");
    let count = entries.len();
    let variants = entries.iter().map(|(path, variant)| {
        let doc = format!(
            "The job `{}`.",
            path.to_token_stream().to_string().replace(' ', "")
        );
        quote!(#[doc = #doc] #variant)
    });
    let variant_idents: Vec<&Ident> = entries.iter().map(|(_, v)| v).collect();
    let as_str_arms = entries.iter().map(|(path, variant)| {
        let name = quote_spanned!(path.span()=> <#path as ::durable_jobs::checks::RegisterJob<#app>>::NAME);
        quote!(Self::#variant => #name,)
    });
    let kind_arms = entries.iter().map(|(path, variant)| {
        let kind = quote_spanned!(path.span()=> <#path as ::durable_jobs::checks::RegisterJob<#app>>::KIND);
        quote!(Self::#variant => #kind,)
    });
    let registrations = entries.iter().map(|(path, _)| {
        let function = quote_spanned!(path.span()=> <#path as ::durable_jobs::checks::RegisterJob<#app>>::register_into);
        quote!(#function(__durable_jobs);)
    });
    // The runtime derives `Registered<#ident>` from these (see `checks::ListsJob`).
    let registered = entries.iter().map(|(path, _)| {
        quote_spanned! {path.span()=>
            #[automatically_derived]
            impl ::durable_jobs::checks::ListsJob<#path> for #ident {}
        }
    });
    let mut unique = TokenStream::new();
    for (i, (first, first_variant)) in entries.iter().enumerate() {
        for (second, second_variant) in &entries[i + 1..] {
            // Through the name enum: no bound on the jobs here, so a listed type that is no job
            // is reported once, where it is registered.
            let equal = quote! {
                ::durable_jobs::__private::str_eq(
                    #name_enum::#first_variant.as_str(),
                    #name_enum::#second_variant.as_str(),
                )
            };
            unique.extend(quote_spanned! {second.span()=>
                const _: () = <::durable_jobs::checks::NamesEqual<{ #equal }>
                    as ::durable_jobs::checks::DistinctNames<#first, #second, #ident>>::CHECKED;
            });
        }
    }
    let errors = errors.to_compile_errors();

    quote! {
        #errors

        #(#attrs)*
        #default_doc
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::default::Default)]
        #vis struct #ident;

        #[doc = #enum_doc]
        #[derive(
            ::core::clone::Clone, ::core::marker::Copy, ::core::cmp::PartialEq, ::core::cmp::Eq,
            ::core::cmp::PartialOrd, ::core::cmp::Ord, ::core::hash::Hash, ::core::fmt::Debug,
        )]
        // The variants are the job types' names, which the user chose: a prefix they share is
        // not this enum's to drop.
        #[allow(clippy::enum_variant_names)]
        #vis enum #name_enum {
            #(#variants,)*
        }

        const _: () = {
            #[automatically_derived]
            impl ::durable_jobs::Registry for #ident {
                type App = #app;

                fn register(__durable_jobs: &mut ::durable_jobs::JobSet<#app>) {
                    #(#registrations)*
                }
            }

            #(#registered)*

            #[allow(dead_code)]
            impl #ident {
                /// A builder for an engine running these jobs, the same as
                /// `durable_jobs::Engine::<Self>::builder()`.
                #vis fn builder() -> ::durable_jobs::EngineBuilder<#ident> {
                    ::durable_jobs::Engine::<#ident>::builder()
                }
            }

            #[allow(dead_code)]
            impl #name_enum {
                /// Every job, in the order of the `registry!` list.
                #vis const ALL: [Self; #count] = [#(Self::#variant_idents),*];

                /// The persisted name: what the store keys instances by and what
                /// `client.by_name` accepts.
                #vis const fn as_str(self) -> &'static ::core::primitive::str {
                    match self {
                        #(#as_str_arms)*
                    }
                }

                /// The kind of the job, which decides its client accessor.
                #vis const fn kind(self) -> ::durable_jobs::JobKind {
                    match self {
                        #(#kind_arms)*
                    }
                }
            }

            #[automatically_derived]
            impl ::core::fmt::Display for #name_enum {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    ::core::fmt::Formatter::write_str(f, self.as_str())
                }
            }

            #[automatically_derived]
            impl ::core::str::FromStr for #name_enum {
                type Err = ::durable_jobs::Error;

                /// The job with this persisted name; `Error::JobNotFound` for any other string.
                fn from_str(name: &::core::primitive::str) -> ::core::result::Result<Self, Self::Err> {
                    for job in Self::ALL {
                        if ::durable_jobs::__private::str_eq(job.as_str(), name) {
                            return ::core::result::Result::Ok(job);
                        }
                    }
                    ::core::result::Result::Err(::durable_jobs::__private::job_not_found(name))
                }
            }

            #unique
        };
    }
}

fn list(entries: &[(syn::Path, Ident)]) -> String {
    if entries.is_empty() {
        return "none yet".to_owned();
    }
    entries
        .iter()
        .map(|(p, _)| format!("`{}`", p.to_token_stream().to_string().replace(' ', "")))
        .collect::<Vec<_>>()
        .join(", ")
}
