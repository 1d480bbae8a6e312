//! Each lesson's variants, declared once: URL name, whether it stalls, what it teaches. The
//! enum parses from the `{variant}` path segment; the registry (`routes::LESSONS`), the
//! experiment, metrics labels and the OpenAPI document read the rest from here.

/// One variant of a lesson, as the registry lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// The URL name (`{variant}` segment, `variant` label).
    pub name: &'static str,
    /// Holds a runtime worker while it works: concurrent requests come out serialised.
    pub stalls: bool,
    /// The lesson in one line, shown in every answer (`lesson`).
    pub teaches: &'static str,
}

/// Declares a lesson's variant enum with its URL names, stalling flags and teaching lines; an
/// unknown name becomes [`AppError::UnknownVariant`](crate::error::AppError::UnknownVariant)
/// listing the valid ones.
macro_rules! lesson_variants {
    ($(#[$meta:meta])* $vis:vis enum $name:ident for $lesson:literal {
        $($(#[$vmeta:meta])* $variant:ident = $slug:literal {
            stalls: $stalls:literal,
            teaches: $teaches:literal $(,)?
        }),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// The lesson these variants belong to (the first path segment).
            pub const LESSON: &'static str = $lesson;
            /// Every variant's URL name, in teaching order.
            pub const NAMES: &'static [&'static str] = &[$($slug),+];
            /// Every variant, in teaching order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every variant as the registry lists it, in teaching order.
            pub const VARIANTS: &'static [$crate::routes::variant::Variant] = &[$(
                $crate::routes::variant::Variant { name: $slug, stalls: $stalls, teaches: $teaches }
            ),+];

            /// The variant's URL name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $slug),+ }
            }

            /// What this variant teaches, in one line.
            pub fn lesson(self) -> &'static str {
                match self { $($name::$variant => $teaches),+ }
            }
        }

        impl $crate::routes::lesson_request::LessonVariant for $name {
            const LESSON: &'static str = $lesson;

            fn name(self) -> &'static str {
                self.as_str()
            }

            fn teaches(self) -> &'static str {
                self.lesson()
            }

            fn stalls(self) -> bool {
                match self { $($name::$variant => $stalls),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::error::AppError;

            fn from_str(given: &str) -> Result<Self, Self::Err> {
                match given {
                    $($slug => Ok($name::$variant),)+
                    _ => Err($crate::error::AppError::UnknownVariant {
                        lesson: $lesson,
                        given: given.chars().take(64).collect(),
                        valid: Self::NAMES,
                    }),
                }
            }
        }

        /// In the OpenAPI document: a string enum of the URL names (Swagger UI shows a
        /// dropdown), the first one preselected so "Try it out" runs in one click.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(Self::NAMES.iter().copied()))
                    .default(Some(Self::NAMES[0].into()))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use lesson_variants;
