//! `#[derive(Component)]`: a Rust struct with named fields as a row of a
//! schema table. The table is the struct's name in snake case, or
//! `#[ecsdb(table = "name")]`; each field maps to the table's stored field
//! of the same name. The derive only describes the struct; whether it fits
//! the schema is checked when the type is registered with a database
//! (`Database::register`), which reports every mismatch at once.

use proc_macro::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitStr, parse_macro_input};

#[proc_macro_derive(Component, attributes(ecsdb))]
pub fn derive_component(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// `#[derive(Enum)]`: a fieldless Rust enum as a schema enum. Variants map
/// by position; their names in snake case must be the schema's, in order
/// (checked when a component using it is registered).
#[proc_macro_derive(Enum)]
pub fn derive_enum(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand_enum(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand_enum(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let name = &input.ident;
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new_spanned(name, "Enum can be derived for fieldless enums only"));
    };
    let mut idents = Vec::new();
    for v in &data.variants {
        if !matches!(v.fields, Fields::Unit) {
            return Err(syn::Error::new_spanned(v, "Enum variants cannot carry fields"));
        }
        idents.push(v.ident.clone());
    }
    if idents.is_empty() {
        return Err(syn::Error::new_spanned(name, "Enum needs at least one variant"));
    }
    let names: Vec<String> = idents.iter().map(|i| snake_case(&i.to_string())).collect();
    let indexes: Vec<u16> = (0..idents.len()).map(|i| u16::try_from(i).unwrap_or(u16::MAX)).collect();
    let first = &idents[0];
    let cc = quote!(::ecsdb::core::component);
    Ok(quote! {
        impl #name {
            /// The variant at schema index `i` (the first for an unknown index;
            /// stored values are checked on every write).
            fn __ecsdb_from_index(i: u16) -> Self {
                match i { #( #indexes => Self::#idents, )* _ => Self::#first }
            }
            fn __ecsdb_index(&self) -> u16 {
                match self { #( Self::#idents => #indexes, )* }
            }
        }
        impl #cc::FieldValue for #name {
            type Col<'a> = #cc::EnumCol<&'a [u8]>;
            type ColMut<'a> = #cc::EnumCol<&'a mut [u8]>;
            fn write_bytes(&self, out: &mut [u8]) -> bool {
                #cc::enum_write_bytes(self.__ecsdb_index(), out)
            }
            fn col<'a>(
                c: &'a ::ecsdb::core::archetype::Column,
                ty: &'a ::ecsdb::schema::FieldType,
                _schema: &'a ::ecsdb::Schema,
            ) -> ::std::option::Option<Self::Col<'a>> {
                #cc::enum_col(c, ty)
            }
            fn col_mut<'a>(
                c: &'a mut ::ecsdb::core::archetype::Column,
                ty: &'a ::ecsdb::schema::FieldType,
            ) -> ::std::option::Option<Self::ColMut<'a>> {
                #cc::enum_col_mut(c, ty)
            }
            fn get(col: &Self::Col<'_>, row: usize) -> Self {
                Self::__ecsdb_from_index(col.index(row))
            }
            fn get_mut(col: &Self::ColMut<'_>, row: usize) -> Self {
                Self::__ecsdb_from_index(col.index(row))
            }
            fn set(&self, col: &mut Self::ColMut<'_>, row: usize) {
                col.set_index(row, self.__ecsdb_index());
            }
            fn fits(ty: &::ecsdb::schema::FieldType) -> bool {
                ::std::matches!(ty, ::ecsdb::schema::FieldType::Enum { .. })
            }
            fn variants() -> ::std::option::Option<&'static [&'static str]> {
                ::std::option::Option::Some(&[#(#names),*])
            }
            fn to_value(&self) -> ::ecsdb::Value {
                ::ecsdb::Value::Enum(match self { #( Self::#idents => #indexes, )* })
            }
            fn from_value(v: &::ecsdb::Value) -> ::std::option::Option<Self> {
                match v {
                    #( ::ecsdb::Value::Enum(#indexes) => ::std::option::Option::Some(Self::#idents), )*
                    _ => ::std::option::Option::None,
                }
            }
        }
    })
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let name = &input.ident;
    let mut table = snake_case(&name.to_string());
    for attr in &input.attrs {
        if attr.path().is_ident("ecsdb") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("table") {
                    table = meta.value()?.parse::<LitStr>()?.value();
                    Ok(())
                } else {
                    Err(meta.error("expected `table = \"name\"`"))
                }
            })?;
        }
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(name, "Component can be derived for structs with named fields only"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(name, "Component can be derived for structs with named fields only"));
    };
    let idents: Vec<_> = fields.named.iter().filter_map(|f| f.ident.clone()).collect();
    let names: Vec<String> = idents.iter().map(ToString::to_string).collect();
    let types: Vec<_> = fields.named.iter().map(|f| f.ty.clone()).collect();
    let type_names: Vec<String> = types.iter().map(|t| quote!(#t).to_string().replace(' ', "")).collect();
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let cc = quote!(::ecsdb::core::component);
    let col = quote!(::ecsdb::core::archetype::Column);
    let fty = quote!(::ecsdb::schema::FieldType);
    let idx: Vec<syn::Index> = (0..idents.len()).map(syn::Index::from).collect();
    let nums: Vec<usize> = (0..idents.len()).collect();
    Ok(quote! {
        impl #impl_generics ::ecsdb::Component for #name #ty_generics #where_clause {
            const TABLE: &'static str = #table;
            type Cols<'a> = ( #( <#types as #cc::FieldValue>::Col<'a>, )* );
            type ColsMut<'a> = ( #( <#types as #cc::FieldValue>::ColMut<'a>, )* );
            fn write_field(&self, i: usize, out: &mut [u8]) -> bool {
                match i {
                    #( #nums => #cc::FieldValue::write_bytes(&self.#idents, out), )*
                    _ => false,
                }
            }
            fn cols<'a>(
                cols: &[&'a #col],
                types: &[&'a #fty],
                schema: &'a ::ecsdb::Schema,
            ) -> ::std::option::Option<Self::Cols<'a>> {
                ::std::option::Option::Some(( #(
                    <#types as #cc::FieldValue>::col(cols.get(#nums)?, types.get(#nums)?, schema)?,
                )* ))
            }
            fn cols_mut<'a>(
                cols: ::std::vec::Vec<&'a mut #col>,
                types: &[&'a #fty],
            ) -> ::std::option::Option<Self::ColsMut<'a>> {
                let mut it = cols.into_iter();
                ::std::option::Option::Some(( #(
                    <#types as #cc::FieldValue>::col_mut(it.next()?, types.get(#nums)?)?,
                )* ))
            }
            #[inline]
            fn read(cols: &Self::Cols<'_>, row: usize) -> Self {
                Self { #( #idents: <#types as #cc::FieldValue>::get(&cols.#idx, row), )* }
            }
            #[inline]
            fn read_mut(cols: &Self::ColsMut<'_>, row: usize) -> Self {
                Self { #( #idents: <#types as #cc::FieldValue>::get_mut(&cols.#idx, row), )* }
            }
            #[inline]
            fn write(&self, cols: &mut Self::ColsMut<'_>, row: usize) {
                #( #cc::FieldValue::set(&self.#idents, &mut cols.#idx, row); )*
            }
            fn fields() -> ::std::vec::Vec<::ecsdb::core::component::FieldDecl> {
                ::std::vec![#(
                    ::ecsdb::core::component::FieldDecl {
                        name: #names,
                        rust_type: #type_names,
                        fits: <#types as ::ecsdb::core::component::FieldValue>::fits,
                        variants: <#types as ::ecsdb::core::component::FieldValue>::variants(),
                    }
                ),*]
            }
            fn to_values(&self) -> ::std::vec::Vec<::ecsdb::Value> {
                ::std::vec![#( ::ecsdb::core::component::FieldValue::to_value(&self.#idents) ),*]
            }
            fn from_values(values: &[::ecsdb::Value]) -> ::std::option::Option<Self> {
                let mut it = values.iter();
                ::std::option::Option::Some(Self {
                    #( #idents: ::ecsdb::core::component::FieldValue::from_value(it.next()?)?, )*
                })
            }
        }
    })
}
