/* Entry points of the subcommands; argv[0] is the subcommand's name. Each
 * returns the process exit status: 0 success, 1 failure, 2 bad usage. */
#ifndef MM_COMMANDS_H
#define MM_COMMANDS_H

int mm_cmd_train(int argc, char **argv);
int mm_cmd_eval(int argc, char **argv);
int mm_cmd_inspect(int argc, char **argv);
int mm_cmd_keygen(int argc, char **argv);
int mm_cmd_netkey(int argc, char **argv);
int mm_cmd_owner_keygen(int argc, char **argv);
int mm_cmd_cert(int argc, char **argv);
int mm_cmd_status(int argc, char **argv);
int mm_cmd_demo(int argc, char **argv);
int mm_cmd_sim(int argc, char **argv);
int mm_cmd_xbench(int argc, char **argv);

#endif
