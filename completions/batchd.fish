complete -c batchd -s d -l delay -d 'Write a batch this long after its first event at the latest: the longest a change waits (15s, 500ms, 2m; a bare number is seconds)' -r
complete -c batchd -l settle -d 'Write a batch early once no event came for this long, so a source that went quiet does not wait out the delay (0: off, every batch waits the whole delay, as lsyncd\'s)' -r
complete -c batchd -s n -l max-events -d 'Write a batch early once this many changes are pending (after folding)' -r
complete -c batchd -l connect -d 'Read the stream from a writer\'s unix socket (`watchd --listen PATH`) instead of stdin; when the writer goes away, reconnect and resume' -r -F
complete -c batchd -l listen -d 'Serve batches on a unix socket at PATH instead of stdout, for any number of readers (`pushd --connect PATH`) that resume where they left off' -r -F
complete -c batchd -l backlog -d 'How much a --listen writer keeps for readers that reconnect: a record count (100000) or a size (64M)' -r
complete -c batchd -l status-file -d 'Keep a JSON status file at FILE (rewritten atomically on changes, at most once a second, and every 5 s while idle; `syncpipe status` reads it)' -r -F
complete -c batchd -l metrics-file -d 'Keep Prometheus metrics (text format, `syncpipe_` names) at FILE, for node_exporter\'s textfile collector (name it *.prom in its directory)' -r -F
complete -c batchd -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c batchd -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c batchd -s q -l quiet -d 'Say only warnings and errors'
complete -c batchd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c batchd -s V -l version -d 'Print version'
