"""Wire formats and Kafka I/O: codecs of the table values and events, topic creation, produce and tail."""
