/* include/tether/notify.h - tell the service manager how we are (sd_notify).
 *
 * With libsystemd at build time (TETHER_SYSTEMD), these send READY=1,
 * RELOADING=1 and STOPPING=1 to $NOTIFY_SOCKET, so a Type=notify unit
 * knows when tetherd serves; without it, or without $NOTIFY_SOCKET, they
 * do nothing. Call from the main thread only. */
#ifndef TETHER_NOTIFY_H
#define TETHER_NOTIFY_H

/* Every worker runs: <status> is a one-line description for systemctl. */
void notify_ready(const char *status);

/* SIGHUP seen: reloading the certificate (followed by notify_ready). */
void notify_reloading(void);

/* Shutting down. */
void notify_stopping(void);

#endif /* TETHER_NOTIFY_H */
