// Package releasecheck holds the checks that a release needs and a
// change to the code seldom does: Caddy built with xcaddy the way users
// build the plugin, and the plugin vetted and built for every platform it
// supports. On a cold build cache they cost minutes of compiling, so they
// run only with PIRAEUS_RELEASE_CHECKS=1 (make test and CI set it) and
// never with -short, in a package of their own so that their time counts
// against no other package's test timeout.
package releasecheck
