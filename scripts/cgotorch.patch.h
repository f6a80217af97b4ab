// Included before each of gotorch's cgotorch/*.cc when scripts/setup.sh compiles them
// against libtorch 2.x. Empty means they compile unchanged.
