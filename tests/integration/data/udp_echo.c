/*
 * udp_echo PORT: answer each UDP datagram on PORT (every IPv4 address) with "echo " and the
 * datagram, and say on stdout whom it answered. The busybox in the default rootfs has no UDP
 * server (its nc has no -u), so a UDP publish test runs this in the job: built static with
 * musl (Makefile: build/udp-echo), it needs nothing from the rootfs.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: udp_echo PORT\n");
        return 2;
    }
    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    if (sock < 0 || bind(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("udp_echo: bind");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        char in[1024], out[1100];
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(sock, in, sizeof in - 1, 0, (struct sockaddr *)&peer, &len);
        if (n < 0) {
            perror("udp_echo: recvfrom");
            return 1;
        }
        in[n] = '\0';
        int m = snprintf(out, sizeof out, "echo %s", in);
        sendto(sock, out, (size_t)m, 0, (struct sockaddr *)&peer, len);
        printf("answered %s\n", inet_ntoa(peer.sin_addr));
        fflush(stdout);
    }
}
