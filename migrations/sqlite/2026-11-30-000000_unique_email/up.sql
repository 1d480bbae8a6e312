-- One account per email address, as on the other backends (compared exactly, as stored).
CREATE UNIQUE INDEX users_email_key ON users (email);
