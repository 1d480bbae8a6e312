-- One account per email address, compared exactly as on PostgreSQL and SQLite: a binary
-- collation (the default one ignores case). On MariaDB the NO PAD binary collation, for email
-- and username both: its PAD SPACE collations compare 'alice ' equal to 'alice'. (MySQL 8 has
-- no utf8mb4_nopad_bin; the `/*M!` lines run on MariaDB only, and the service refuses
-- trailing spaces in usernames and emails anyway.)
ALTER TABLE users MODIFY email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL;
/*M!100202 ALTER TABLE users MODIFY email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL */;
/*M!100202 ALTER TABLE users MODIFY username VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL */;
ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);
