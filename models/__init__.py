"""Tables, the raw-mail store and the domain operations: the only writer of the database."""
