# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_relayd_global_optspecs
    string join \n v/verbose q/quiet log-file= h/help V/version
end

function __fish_relayd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_relayd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_relayd_using_subcommand
    set -l cmd (__fish_relayd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c relayd -n "__fish_relayd_needs_command" -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c relayd -n "__fish_relayd_needs_command" -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c relayd -n "__fish_relayd_needs_command" -s q -l quiet -d 'Say only warnings and errors'
complete -c relayd -n "__fish_relayd_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c relayd -n "__fish_relayd_needs_command" -s V -l version -d 'Print version'
complete -c relayd -n "__fish_relayd_needs_command" -f -a "publish" -d 'Publish the stream on stdin to JetStream stream STREAM'
complete -c relayd -n "__fish_relayd_needs_command" -f -a "subscribe" -d 'Follow JetStream stream STREAM and write the stream on stdout'
complete -c relayd -n "__fish_relayd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c relayd -n "__fish_relayd_using_subcommand publish" -l creds -d 'NATS credentials file (JWT and NKey seed), as `nats --creds` takes' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand publish" -l tls-ca -d 'CA certificate that signed the server\'s (implies TLS)' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand publish" -l tls-cert -d 'Client certificate for mutual TLS (with --tls-key)' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand publish" -l tls-key -d 'Client key for mutual TLS (with --tls-cert)' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand publish" -l max-msgs -d 'When creating the stream: keep at most this many messages' -r
complete -c relayd -n "__fish_relayd_using_subcommand publish" -l max-bytes -d 'When creating the stream: keep at most this many bytes' -r
complete -c relayd -n "__fish_relayd_using_subcommand publish" -l max-age -d 'When creating the stream: drop messages older than this (7d, 12h)' -r
complete -c relayd -n "__fish_relayd_using_subcommand publish" -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand publish" -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c relayd -n "__fish_relayd_using_subcommand publish" -s q -l quiet -d 'Say only warnings and errors'
complete -c relayd -n "__fish_relayd_using_subcommand publish" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -l durable -d 'The durable consumer\'s name, one per replica: it keeps the cursor' -r
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -l log-lag -d 'Also log the lag (pending messages, seconds behind, last seq written) every DURATION, for units whose STATUS= is pushd\'s' -r
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -l creds -d 'NATS credentials file (JWT and NKey seed), as `nats --creds` takes' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -l tls-ca -d 'CA certificate that signed the server\'s (implies TLS)' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -l tls-cert -d 'Client certificate for mutual TLS (with --tls-key)' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -l tls-key -d 'Client key for mutual TLS (with --tls-cert)' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -l status-file -d 'Keep a JSON status file at FILE (rewritten atomically on changes, at most once a second, and every 5 s while idle; `syncpipe status` reads it)' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -l metrics-file -d 'Keep Prometheus metrics (text format, `syncpipe_` names) at FILE, for node_exporter\'s textfile collector (name it *.prom in its directory)' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -s q -l quiet -d 'Say only warnings and errors'
complete -c relayd -n "__fish_relayd_using_subcommand subscribe" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c relayd -n "__fish_relayd_using_subcommand help; and not __fish_seen_subcommand_from publish subscribe help" -f -a "publish" -d 'Publish the stream on stdin to JetStream stream STREAM'
complete -c relayd -n "__fish_relayd_using_subcommand help; and not __fish_seen_subcommand_from publish subscribe help" -f -a "subscribe" -d 'Follow JetStream stream STREAM and write the stream on stdout'
complete -c relayd -n "__fish_relayd_using_subcommand help; and not __fish_seen_subcommand_from publish subscribe help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
