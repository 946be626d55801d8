// Built in GOPATH mode against Debian's packages (scripts/build-pion.sh), not as a module:
// this file only makes the go command read pion's ".../v3"-style imports as Debian installs
// them ("minimal module compatibility"). Hence no requirements.
module forwarder

go 1.19
