# syncpipe: let `pushd` mean syncpipe's pushd where a directory stack cannot
# be meant, and keep the shell's builtin everywhere else.
#
# bash and zsh have a `pushd` builtin that wins over any program on PATH, so
# `watchd /data | batchd -d 15 | pushd host:/dst` would run the builtin (bash:
# "No such file or directory"; with an existing directory it silently
# "succeeds" and the stream is lost). `env pushd ...` always runs the program;
# this function makes the plain spelling work too, in interactive bash and zsh
# only (scripts keep the builtin untouched).
#
# Install: copy to /etc/profile.d/syncpipe-pushd.sh (bash login shells) and
# source it from /etc/zsh/zshrc or ~/.zshrc (zsh), or from ~/.bashrc.
#
# The program runs when stdin is not a terminal (the end of a pipeline: the
# builtin never reads stdin), or when the first argument is a sync target or
# a long option (`host:/path`, `host::module`, `rsync://…`, `--…`).
case $- in
*i*)
    pushd() {
        if [ ! -t 0 ]; then
            command env pushd "$@"
            return
        fi
        case "${1-}" in
        --* | *:*) command env pushd "$@" ;;
        *) builtin pushd "$@" ;;
        esac
    }
    ;;
esac
