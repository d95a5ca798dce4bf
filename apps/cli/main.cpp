// chromacpp — command line front end (being written).
#include <cstdio>
int main() { std::puts("chromacpp: not built yet"); return 1; }
