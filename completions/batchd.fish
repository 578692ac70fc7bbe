complete -c batchd -s d -l delay -d 'Write a batch this long after its first event (15s, 500ms, 2m; a bare number is seconds)' -r
complete -c batchd -s n -l max-events -d 'Write a batch early once this many changes are pending (after folding)' -r
complete -c batchd -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c batchd -s q -l quiet -d 'Say only warnings and errors'
complete -c batchd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c batchd -s V -l version -d 'Print version'
