-- The users table of the database lessons (MySQL / MariaDB dialect).
-- `username` uses a binary collation: MySQL's default collations compare case-insensitively,
-- which would make `Alice` and `alice` collide here but not on PostgreSQL or SQLite.
CREATE TABLE users (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    email VARCHAR(254) CHARACTER SET utf8mb4 NOT NULL,
    password_hash VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CONSTRAINT users_username_key UNIQUE (username)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
