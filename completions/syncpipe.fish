# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_syncpipe_global_optspecs
    string join \n v/verbose q/quiet log-file= h/help V/version
end

function __fish_syncpipe_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_syncpipe_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_syncpipe_using_subcommand
    set -l cmd (__fish_syncpipe_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c syncpipe -n "__fish_syncpipe_needs_command" -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c syncpipe -n "__fish_syncpipe_needs_command" -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c syncpipe -n "__fish_syncpipe_needs_command" -s q -l quiet -d 'Say only warnings and errors'
complete -c syncpipe -n "__fish_syncpipe_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c syncpipe -n "__fish_syncpipe_needs_command" -s V -l version -d 'Print version'
complete -c syncpipe -n "__fish_syncpipe_needs_command" -f -a "status" -d 'Every sync on this host, one line per target: state, lag, last error'
complete -c syncpipe -n "__fish_syncpipe_needs_command" -f -a "import-lsyncd" -d 'Turn an lsyncd configuration into one syncpipe config per sync{}'
complete -c syncpipe -n "__fish_syncpipe_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand status" -l run-dir -d 'Where the syncs\' runtime directories are' -r -F
complete -c syncpipe -n "__fish_syncpipe_using_subcommand status" -l conf-dir -d 'Where the syncs\' configs are' -r -F
complete -c syncpipe -n "__fish_syncpipe_using_subcommand status" -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c syncpipe -n "__fish_syncpipe_using_subcommand status" -l json -d 'Print the status files\' contents as one JSON array'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand status" -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand status" -s q -l quiet -d 'Say only warnings and errors'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand import-lsyncd" -l dir -d 'Write the configs into DIR' -r -F
complete -c syncpipe -n "__fish_syncpipe_using_subcommand import-lsyncd" -l name -d 'Name the config NAME (one sync), or a pattern where `{}` is the name derived from each source (several syncs)' -r
complete -c syncpipe -n "__fish_syncpipe_using_subcommand import-lsyncd" -l log-file -d 'Append the log lines to FILE too, each after its time (lsyncd\'s logfile); a rotated FILE is noticed and opened again' -r -F
complete -c syncpipe -n "__fish_syncpipe_using_subcommand import-lsyncd" -l stdout -d 'Print the configs on stdout (the table goes to stderr) instead of writing them'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand import-lsyncd" -l force -d 'Replace configs that exist already'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand import-lsyncd" -l check -d 'Also run lsyncd and the imported pipeline on a sample tree in a temporary directory, make changes, and say whether both targets end with the same files (needs lsyncd installed)'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand import-lsyncd" -s v -l verbose -d 'Say more on stderr (repeat for debug output)'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand import-lsyncd" -s q -l quiet -d 'Say only warnings and errors'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand import-lsyncd" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand help; and not __fish_seen_subcommand_from status import-lsyncd help" -f -a "status" -d 'Every sync on this host, one line per target: state, lag, last error'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand help; and not __fish_seen_subcommand_from status import-lsyncd help" -f -a "import-lsyncd" -d 'Turn an lsyncd configuration into one syncpipe config per sync{}'
complete -c syncpipe -n "__fish_syncpipe_using_subcommand help; and not __fish_seen_subcommand_from status import-lsyncd help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
