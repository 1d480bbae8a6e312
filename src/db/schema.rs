//! The `users` table as diesel sees it, the same on every backend (the migrations under
//! `migrations/{postgres,mysql,sqlite}` create it in each dialect).

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        email -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}
