-- One account per email address, as on the other backends (compared exactly, as stored).
ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);
